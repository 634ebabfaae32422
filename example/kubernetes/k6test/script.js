// The original project's load test: each virtual user sends `GET /` with `environment: qa` and
// a cookie through the enricher, checks that destination-app answered, and sleeps 1 s.
//
// Environment (k6 run -e NAME=value, or the Job's env):
//   ENDPOINT   the enricher's URL (default: the in-cluster Service)
//   VUS, DURATION   a short constant profile instead of the original's stages, e.g. 20 and 10s
import http from "k6/http";
import { check, sleep } from "k6";

const ENDPOINT = __ENV.ENDPOINT || "http://acme-enricher/";
// Text of destination-app's index.html (example/kubernetes/base/index.html).
const PAGE_MARKER = "<h1>destination-app</h1>";

// The original's profile: 25 -> 350 VUs in steps of 25 (30 s ramp, 300 s hold each), then a
// spike to 500.
function originalStages() {
  const stages = [];
  for (let target = 25; target <= 350; target += 25) {
    stages.push({ target: target, duration: "30s" });
    stages.push({ target: target, duration: "300s" });
  }
  stages.push({ target: 500, duration: "10s" });
  stages.push({ target: 500, duration: "60s" });
  stages.push({ target: 0, duration: "30s" });
  return stages;
}

const profile = __ENV.VUS
  ? { vus: Number(__ENV.VUS), duration: __ENV.DURATION || "10s" }
  : { stages: originalStages() };

export const options = Object.assign(profile, {
  thresholds: {
    checks: ["rate>0.99"],
    http_req_failed: ["rate<0.01"],
  },
});

export default function () {
  const response = http.get(ENDPOINT, {
    headers: { environment: "qa" },
    cookies: { testCookie: "value" },
    tags: { k6test: "yes" },
  });
  check(response, {
    "status is 200": (r) => r.status === 200,
    "body is destination-app's page": (r) => typeof r.body === "string" && r.body.includes(PAGE_MARKER),
    "header Destination_app is ok": (r) => r.headers["Destination_app"] === "ok",
  });
  sleep(1);
}
