-- wrk script for bench_http.py: ../shared/bench/post_position.lua (POST the position payload
-- with a bearer token from env TOKEN, plate varied over 1,000 vehicles) plus a done() that
-- prints one machine-readable line: "BENCH requests errors duration_us p50_us p99_us max_us".
local f = io.open(os.getenv("PAYLOAD") or "position_payload.json"); local body = f:read("*a"); f:close()
local tok = os.getenv("TOKEN") or ""
local letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
math.randomseed(os.time())
request = function()
  local i = math.random(0, 999)
  local plate = string.format("ABC%d%s%02d", i % 10, letters:sub((i % 26) + 1, (i % 26) + 1), i % 100)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tok},
                    (body:gsub("ABC1D23", plate)))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
