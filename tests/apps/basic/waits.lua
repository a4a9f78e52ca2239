-- Waits for a "go" signal (with a payload) and returns it along with what came before it.
local function main(input)
    local seen = {}
    local inbox = process.inbox()
    local go = process.listen("go", { message = true })
    while true do
        local got = channel.select { go:case_receive(), inbox:case_receive() }
        if got.channel == go then
            local msg = got.value
            return { go = msg:payload():data(), from = msg:from(), before = seen }
        end
        table.insert(seen, got.value:topic())
    end
end
return { main = main }
