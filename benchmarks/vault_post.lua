-- wrk script: POST the entry (or batch) in BODY_FILE to the vault, each request with an
-- Idempotency-Key of its own, and count the receipts: 201 sealed, 202 accepted but not yet
-- sealed, anything else refused. ENTRIES (default 1) is the number of entries per request.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local token = os.getenv("VAULT_TOKEN")
local per = tonumber(os.getenv("ENTRIES") or "1")
local run = os.getenv("RUN_ID") or tostring(os.time())

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  sealed, pending, other, first_other, n = 0, 0, 0, 0, 0
  prefix = string.format("bench-%s-%d-", run, thread_id)
end

function request()
  n = n + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = prefix .. n,
  }, body)
end

function response(status, headers, reply)
  if status == 201 then
    sealed = sealed + per
  elseif status == 202 then
    pending = pending + per
  else
    other = other + 1
    if first_other == 0 then first_other = status end
  end
end

function done(summary, latency, requests)
  local s, p, o, first = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    s = s + thread:get("sealed")
    p = p + thread:get("pending")
    o = o + thread:get("other")
    if first == 0 then first = thread:get("first_other") end
  end
  io.write(string.format("sealed=%d pending=%d other=%d first_other=%d\n", s, p, o, first))
end
