-- A mixed identity-system load: /translate (batches of 16 templates) and /verify (8 cross-model pairs),
-- alternating per request. Bodies are built once; the API key comes from the FACEBRIDGE_KEY variable.
local key = os.getenv("FACEBRIDGE_KEY") or ""
local function vector(dim, seed)
  local values, norm = {}, 0
  for i = 1, dim do
    local v = math.sin(i * 12.9898 + seed * 78.233)
    values[i] = v
    norm = norm + v * v
  end
  norm = math.sqrt(norm)
  for i = 1, dim do values[i] = string.format("%.6f", values[i] / norm) end
  return "[" .. table.concat(values, ",") .. "]"
end
local rows = {}
for r = 1, 16 do rows[r] = vector(128, r) end
local translate = '{"source":"arcface-mbf128","target":"sirius-mbf192","embeddings":[' .. table.concat(rows, ",") .. "]}"
local pairs_ = {}
for p = 1, 8 do
  pairs_[p] = '{"a":{"model":"arcface-mbf128","embedding":' .. vector(128, p) ..
              '},"b":{"model":"sirius-mbf192","embedding":' .. vector(192, p + 100) .. "}}"
end
local verify = '{"pairs":[' .. table.concat(pairs_, ",") .. "]}"
local counter = 0

request = function()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = key}
  if counter % 2 == 0 then
    return wrk.format("POST", "/translate", headers, translate)
  end
  return wrk.format("POST", "/verify", headers, verify)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50_ms=%.2f p99_ms=%.2f rps=%.1f\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests / (summary.duration / 1e6)))
end
