-- Two coroutines that wait: the main one for the signal "go" (line 7), the spawned one on a
-- channel (line 5). tests/integration/test_queries.py asks for their stack.
local function main()
    local ch = channel.new()
    coroutine.spawn(function() ch:receive() end)
    local n = 0
    process.listen("go"):receive()
    n = n + 1
    ch:send(n)
    return "done"
end
return { main = main }
