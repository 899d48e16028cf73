-- Scenario (b): a different API token on every request, cycling through the file named by
-- BENCH_TOKENS (one per line). Each wrk thread starts at its own offset. BENCH_SCHEME
-- (default Bearer) is the scheme put before each: (h) sends Basic credentials.
local tokens = {}
local idx = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 50000)
end

function init(args)
  local scheme = os.getenv("BENCH_SCHEME") or "Bearer"
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    tokens[#tokens + 1] = scheme .. " " .. line
  end
  idx = offset or 0
end

function request()
  idx = idx + 1
  local auth = tokens[(idx % #tokens) + 1]
  return wrk.format("GET", "/auth", {
    ["Authorization"] = auth,
    ["X-Original-URI"] = "/data",
    ["X-Original-Method"] = "GET",
    ["Host"] = "api.example.org",
  })
end
