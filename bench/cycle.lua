-- wrk script: POST the lines of the file named by BODIES (one JSON body per line) in turn,
-- each connection starting at its own line (a retry storm: bodies of stored interactions).
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do
  if #line > 0 then bodies[#bodies + 1] = line end
end
local i = 0
local counter = 0

setup = function(thread)
  thread:set("i", counter * 97)
  counter = counter + 1
end

request = function()
  i = (i % #bodies) + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end

done = function(summary, latency, requests)
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
