-- wrk script: POST one RFC 3161 request (read from the file named by TSQ_FILE) and count
-- granted replies. A TimeStampResp whose PKIStatusInfo is { status 0 } is granted: after the
-- outer SEQUENCE header (4 bytes for a token-bearing reply, long form 0x82 LL LL) comes
-- 30 03 02 01 00.
local f = assert(io.open(os.getenv("TSQ_FILE"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/timestamp-query"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  granted = 0
  other = 0
end

function response(status, headers, reply)
  if status == 200 and reply:sub(5, 9) == "\48\3\2\1\0" then
    granted = granted + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local g, o = 0, 0
  for _, thread in ipairs(threads) do
    g = g + thread:get("granted")
    o = o + thread:get("other")
  end
  io.write(string.format("granted=%d other=%d\n", g, o))
end
