-- wrk script for bench_http.py's position-trigger servers: post_position.lua (the position
-- payload with a bearer token from env TOKEN, plate varied over 1,000 vehicles), but each
-- request a new fix: its device time is a minute before the run started plus one millisecond
-- per request (a position trigger stores a resent fix once). Same done() line as
-- post_position.lua: "BENCH requests errors duration_us p50_us p99_us max_us".
local f = io.open(os.getenv("PAYLOAD") or "position_payload.json"); local body = f:read("*a"); f:close()
local tok = os.getenv("TOKEN") or ""
local letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
local base = os.time() - 60
local n = 0
math.randomseed(os.time())
request = function()
  local i = math.random(0, 999)
  local plate = string.format("ABC%d%s%02d", i % 10, letters:sub((i % 26) + 1, (i % 26) + 1), i % 100)
  local at = os.date("!%Y-%m-%dT%H:%M:%S", base + math.floor(n / 1000)) .. string.format(".%03dZ", n % 1000)
  n = n + 1
  local fix = body:gsub("ABC1D23", plate):gsub("2026%-11%-29T03:40:00Z", at)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tok}, fix)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
