-- A child: prices an item with an activity.
local funcs = require("funcs")

local function quote(item)
    local price, err = funcs.call("family:price_of", item)
    if err then
        return nil, err
    end
    return {item = item, price = price}
end

return { quote = quote }
