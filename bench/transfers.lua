-- POST /v1/transfers between random accounts, each request with a fresh Idempotency-Key.
local first = tonumber(os.getenv("FIRST_ID"))
local count = tonumber(os.getenv("ACCOUNTS"))
local threads = 0
local sent = 0
local prefix = ""

setup = function(thread)
  threads = threads + 1
  thread:set("prefix", os.getenv("RUN_ID") .. "-" .. threads .. "-")
end

init = function()
  prefix = wrk.thread:get("prefix")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

request = function()
  sent = sent + 1
  local from = math.random(first, first + count - 1)
  local to = from
  while to == from do
    to = math.random(first, first + count - 1)
  end
  wrk.headers["Idempotency-Key"] = prefix .. sent
  local body = string.format('{"from": %d, "to": %d, "amount": 1}', from, to)
  return wrk.format(nil, "/v1/transfers", nil, body)
end
