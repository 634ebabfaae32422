// The original project's k6 profile at one load level: each virtual user sends `GET /` with
// `environment: qa` and a cookie, checks that destination-app answered, then sleeps 1 s.
// (The checks of example/kubernetes/k6test/script.js, without its 30-minute stages.)
//
//   k6 run -e ENDPOINT=http://127.0.0.1:5000/ -e VUS=200 -e RAMP=5 -e HOLD=20 bench/k6_profile.js
//
// The users start spread over RAMP seconds, as the original's ramps spread them (all at once,
// they would open 200 connections in the same millisecond and send in lockstep every second).
// Latencies are reported for the HOLD phase alone (the `phase:hold` sub-metrics); checks count
// over the whole run.
import http from "k6/http";
import exec from "k6/execution";
import { check, sleep } from "k6";

const ENDPOINT = __ENV.ENDPOINT;
const VUS = Number(__ENV.VUS || 200);
const RAMP_SECONDS = Number(__ENV.RAMP || 5);
const HOLD_SECONDS = Number(__ENV.HOLD || 20);
const PAGE_MARKER = "<h1>destination-app</h1>";

export const options = {
  scenarios: {
    profile: {
      executor: "ramping-vus",
      startVUs: 0,
      stages: [
        { duration: `${RAMP_SECONDS}s`, target: VUS },
        { duration: `${HOLD_SECONDS}s`, target: VUS },
      ],
      gracefulStop: "5s",
    },
  },
  // Thresholds that always pass: they make k6 export the hold phase's own statistics.
  thresholds: {
    "http_req_duration{phase:hold}": ["max>=0"],
    "http_reqs{phase:hold}": ["count>=0"],
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
};

export default function () {
  const phase = exec.instance.currentTestRunDuration < RAMP_SECONDS * 1000 ? "ramp" : "hold";
  const response = http.get(ENDPOINT, {
    headers: { environment: "qa" },
    cookies: { testCookie: "value" },
    timeout: "10s",
    tags: { phase: phase },
  });
  check(response, {
    "status is 200": (r) => r.status === 200,
    "body is destination-app's page": (r) =>
      typeof r.body === "string" && r.body.includes(PAGE_MARKER),
    "header Destination_app is ok": (r) => r.headers["Destination_app"] === "ok",
  });
  sleep(1);
}
