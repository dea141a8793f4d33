-- wrk script: POST the file named by BODY with content type CTYPE.
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CTYPE") or "application/json"
if os.getenv("AUTH") then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("AUTH")
end

local status_counts = {}
response = function(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
