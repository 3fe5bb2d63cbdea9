-- Replays pre-signed S3 requests in rotation, so wrk never signs anything itself.
--
-- Usage: wrk ... -s replay.lua URL -- PATHS_FILE METHOD BODY_SIZE EXPECT_LEN THREADS
--   PATHS_FILE  one request target (path + presigned query string) per line
--   METHOD      GET or PUT
--   BODY_SIZE   bytes of random body sent with every request (0 for none)
--   EXPECT_LEN  body length every response must have (-1: don't check)
--   THREADS     wrk's -t, used to spread the threads' starting offsets over the paths
--
-- Every response whose status is not 2xx, or whose body has the wrong length, is
-- counted; done() prints one line "BENCH_RESULT {json}" that the runner parses.

local threads = {}

function setup(thread)
  -- setup() runs in the main Lua state before each thread's init(), so the id is
  -- visible there as a global.
  table.insert(threads, thread)
  thread:set("id", #threads)
end

local requests = {}
local index = 1
local expect_len = -1

-- Per-thread counters, read back by done() through thread:get().
bad_status = 0
bad_length = 0
bad_sample = ""

function init(args)
  local paths_file = args[1]
  local method = args[2] or "GET"
  local body_size = tonumber(args[3] or "0")
  expect_len = tonumber(args[4] or "-1")
  local nthreads = tonumber(args[5] or "1")

  local body = nil
  if body_size > 0 then
    -- Random bytes so no layer can compress or dedupe the payload.
    math.randomseed(id * 7919)
    local bytes = {}
    for i = 1, body_size do
      bytes[i] = string.char(math.random(0, 255))
    end
    body = table.concat(bytes)
  end

  local file = assert(io.open(paths_file, "r"))
  for line in file:lines() do
    if #line > 0 then
      -- Pre-formatting keeps request() to a table lookup; headers stay nil so wrk adds Host
      -- (host:port, as signed) and Content-Length.
      requests[#requests + 1] = wrk.format(method, line, nil, body)
    end
  end
  file:close()
  assert(#requests > 0, "no request paths in " .. paths_file)

  -- Start each thread on its own slice so concurrent PUTs rarely hit the same key.
  index = ((id - 1) * math.floor(#requests / nthreads)) % #requests + 1
end

function request()
  local r = requests[index]
  index = index % #requests + 1
  return r
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
    if #bad_sample < 200 then
      bad_sample = bad_sample .. status .. " "
    end
  elseif expect_len >= 0 and #body ~= expect_len then
    bad_length = bad_length + 1
    if #bad_sample < 200 then
      bad_sample = bad_sample .. status .. "/len=" .. #body .. " "
    end
  end
end

function done(summary, latency, requests_)
  local status, length, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    status = status + thread:get("bad_status")
    length = length + thread:get("bad_length")
    sample = sample .. thread:get("bad_sample")
  end
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    pct[#pct + 1] = string.format('"%s":%d', tostring(p), latency:percentile(p))
  end
  io.write(
    string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
        .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
        .. '"bad_status":%d,"bad_length":%d,"bad_sample":"%s",'
        .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"percentiles":{%s}}}\n',
      summary.requests,
      summary.duration,
      summary.bytes,
      e.connect,
      e.read,
      e.write,
      e.status,
      e.timeout,
      status,
      length,
      sample,
      latency.min,
      latency.mean,
      latency.max,
      latency.stdev,
      table.concat(pct, ",")
    )
  )
end
