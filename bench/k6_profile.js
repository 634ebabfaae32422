// The original project's k6 profile at one load level: each virtual user sends `GET /` with
// `environment: qa` and a cookie, checks that destination-app answered, then sleeps 1 s.
// (The checks of example/kubernetes/k6test/script.js, without its 30-minute stages.)
// Two forms, the two ways the original loads a proxy:
//
//   ramped: k6 run -e ENDPOINT=http://127.0.0.1:5000/ -e VUS=200 -e RAMP=5 -e HOLD=20 bench/k6_profile.js
//   spike:  k6 run -e ENDPOINT=http://127.0.0.1:5000/ -e MODE=spike -e VUS=200 -e HOLD=20 bench/k6_profile.js
//
// Ramped: the users start spread over RAMP seconds, as the original's 25-VU steps spread them;
// latencies are reported for the HOLD phase alone (the `phase:hold` sub-metrics).
// Spike: every user starts at once (as in the original's jump to 500 VUs), so the first
// second opens VUS connections together; latencies over the whole HOLD seconds, and the first
// second's alone (`phase:burst`). Checks count over the whole run in both forms.
import http from "k6/http";
import exec from "k6/execution";
import { check, sleep } from "k6";

const ENDPOINT = __ENV.ENDPOINT;
const SPIKE = __ENV.MODE === "spike";
const VUS = Number(__ENV.VUS || 200);
const RAMP_SECONDS = SPIKE ? 0 : Number(__ENV.RAMP || 5);
const HOLD_SECONDS = Number(__ENV.HOLD || 20);
const PAGE_MARKER = "<h1>destination-app</h1>";

const ramped = {
  executor: "ramping-vus",
  startVUs: 0,
  stages: [
    { duration: `${RAMP_SECONDS}s`, target: VUS },
    { duration: `${HOLD_SECONDS}s`, target: VUS },
  ],
  gracefulStop: "5s",
};
const spike = {
  executor: "constant-vus",
  vus: VUS,
  duration: `${HOLD_SECONDS}s`,
  gracefulStop: "5s",
};

export const options = {
  scenarios: { profile: SPIKE ? spike : ramped },
  // Thresholds that always pass: they make k6 export the phases' own statistics.
  thresholds: {
    "http_req_duration{phase:hold}": ["max>=0"],
    "http_reqs{phase:hold}": ["count>=0"],
    "http_req_duration{phase:burst}": ["max>=0"],
    "http_reqs{phase:burst}": ["count>=0"],
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
};

function phase() {
  const elapsed = exec.instance.currentTestRunDuration;
  if (SPIKE) {
    return elapsed < 1000 ? "burst" : "after";
  }
  return elapsed < RAMP_SECONDS * 1000 ? "ramp" : "hold";
}

export default function () {
  const response = http.get(ENDPOINT, {
    headers: { environment: "qa" },
    cookies: { testCookie: "value" },
    timeout: "10s",
    tags: { phase: phase() },
  });
  check(response, {
    "status is 200": (r) => r.status === 200,
    "body is destination-app's page": (r) =>
      typeof r.body === "string" && r.body.includes(PAGE_MARKER),
    "header Destination_app is ok": (r) => r.headers["Destination_app"] === "ok",
  });
  sleep(1);
}
