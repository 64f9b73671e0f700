-- wrk script: HTTP pipelining, 16 GET / requests per write.
--
--     wrk -t1 -c256 -d10s -s bench/pipeline.lua http://127.0.0.1:8879/
--
-- wrk parses the string request() returns to count the requests in it (16 here), sends it in one
-- write, and writes again after all 16 responses arrived. Its "requests" figure counts responses
-- parsed, so requests/s is per request, not per batch; its latency figures are per batch (from the
-- write to the 16th response). bench/http_bench.sh cross-checks the count with uv_hello's own.

local depth = 16

init = function(args)
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format("GET", "/")
   end
   req = table.concat(r)
end

request = function()
   return req
end
