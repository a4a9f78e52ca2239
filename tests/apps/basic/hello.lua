local funcs = require("funcs")
local function main(name)
    local greeting, err = funcs.call("basic:greet", name or "world")
    if err then return nil, err end
    return { greeting = greeting }
end
return { main = main }
