-- wrk script for bench_http.py's position-trigger servers: post_position.lua (the position
-- payload with a bearer token from env TOKEN, plate varied over 1,000 vehicles), but each
-- request a new fix of a vehicle that drives: vehicle i circles its own centre (2 km radius,
-- 54 km/h), its device time is the wall clock (at least 0.5 s after its previous fix), and
-- its place is where the circle puts it at that time. So every fix passes the quality gates
-- and moves the odometer, and successive wrk runs (and fixed_rate.py --fresh-times, which
-- uses the same formula: keep them in step) continue the same tracks. Same done() line as
-- post_position.lua: "BENCH requests errors duration_us p50_us p99_us max_us".
local f = io.open(os.getenv("PAYLOAD") or "position_payload.json"); local body = f:read("*a"); f:close()
local tok = os.getenv("TOKEN") or ""
local letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
local last = {}
local RADIUS_M, SPEED_MS, DEGREE_M = 2000.0, 15.0, 111195.0
math.randomseed(os.time())
local function place(i, ms)
  local clat = -23.55052 + (i % 40) * 0.05
  local clon = -46.633308 + math.floor(i / 40) * 0.05
  local angle = i + (ms / 1000.0) * SPEED_MS / RADIUS_M
  local lat = clat + RADIUS_M * math.sin(angle) / DEGREE_M
  local lon = clon + RADIUS_M * math.cos(angle) / (DEGREE_M * math.cos(math.rad(clat)))
  return string.format("%.6f", lat), string.format("%.6f", lon)
end
request = function()
  local i = math.random(0, 999)
  local plate = string.format("ABC%d%s%02d", i % 10, letters:sub((i % 26) + 1, (i % 26) + 1), i % 100)
  local ms = math.max(os.time() * 1000, (last[i] or 0) + 500)
  last[i] = ms
  local at = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) .. string.format(".%03dZ", ms % 1000)
  local lat, lon = place(i, ms)
  local fix = body:gsub("ABC1D23", plate):gsub("2026%-11%-29T03:40:00Z", at)
  fix = fix:gsub("%-23%.55052", lat):gsub("%-46%.633308", lon)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tok}, fix)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
