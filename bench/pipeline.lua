-- HTTP/1.1 pipelining for wrk: every write carries DEPTH requests back to back.
-- wrk.format() builds each request from wrk.headers, so -H headers are included.
-- Usage: wrk ... -s bench/pipeline.lua URL -- 16
local depth = 16

init = function(args)
   depth = tonumber(args[1]) or depth
   local reqs = {}
   for i = 1, depth do
      reqs[i] = wrk.format()
   end
   req = table.concat(reqs)
end

request = function()
   return req
end
