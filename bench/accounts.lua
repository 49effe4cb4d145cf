-- GET /v1/accounts/{id} over a range of ids; BYPASS=1 adds Cache-Control: no-cache.
local first = tonumber(os.getenv("FIRST_ID"))
local count = tonumber(os.getenv("ACCOUNTS"))
if os.getenv("BYPASS") == "1" then
  wrk.headers["Cache-Control"] = "no-cache"
end

request = function()
  return wrk.format("GET", "/v1/accounts/" .. math.random(first, first + count - 1))
end
