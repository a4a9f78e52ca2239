-- Signals sent before anyone listens wait, in order, for process.listen.
local function before_listen(input)
    process.listen("gate"):receive()
    local items = process.listen("item")
    local got = {}
    for _ = 1, input.n do
        table.insert(got, (items:receive()))
    end
    return got
end

-- A topic someone listens to goes to that channel; everything else to the inbox.
local function inbox_and_listen()
    local mine = process.listen("mine")
    local inbox = process.inbox()
    local first = inbox:receive()
    local second = inbox:receive()
    local data = mine:receive()
    return {
        inbox = { { topic = first:topic(), data = first:payload():data() },
                  { topic = second:topic(), data = second:payload():data() } },
        mine = data,
    }
end

-- {message = true}: a message object with its sender.
local function message()
    local ch = process.listen("request", { message = true })
    local msg = ch:receive()
    return { topic = msg:topic(), from = msg:from(), data = msg:payload():data() }
end

-- Receives n signals and returns them in arrival order.
local function collect(input)
    local ch = process.listen("n")
    local got = {}
    for _ = 1, input.n do
        table.insert(got, (ch:receive()))
    end
    return got
end

return { before_listen = before_listen, inbox_and_listen = inbox_and_listen, message = message,
         collect = collect }
