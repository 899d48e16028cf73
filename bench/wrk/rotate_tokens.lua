-- Scenario (b): a different API token on every request, cycling through the file named by
-- BENCH_TOKENS (one per line, all lines of one length). Each wrk thread starts at its own
-- offset. BENCH_SCHEME (default Bearer) is the scheme put before each: (h) sends Basic
-- credentials.
--
-- Lines are read as requests go, not all at start: wrk starts each thread as soon as it is
-- initialised and its clock only after all are, so a thread that read a million lines in
-- `init` let the threads before it run uncounted time (b2 measured faster than b).
local file
local scheme
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 50000)
end

function init(args)
  scheme = os.getenv("BENCH_SCHEME") or "Bearer"
  file = assert(io.open(os.getenv("BENCH_TOKENS"), "r"))
  local line_bytes = #file:read("*l") + 1
  local lines = math.floor(file:seek("end") / line_bytes)
  file:seek("set", ((offset or 0) % lines) * line_bytes)
end

local function next_token()
  local line = file:read("*l")
  if not line or line == "" then
    file:seek("set", 0)
    line = file:read("*l")
  end
  return line
end

function request()
  return wrk.format("GET", "/auth", {
    ["Authorization"] = scheme .. " " .. next_token(),
    ["X-Original-URI"] = "/data",
    ["X-Original-Method"] = "GET",
    ["Host"] = "api.example.org",
  })
end
