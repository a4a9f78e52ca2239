local function greet(name) return "hello, " .. name end
local function step(i) return i * 10 end
local function raises(what) error("activity exploded: " .. what) end
local function returns_error() return nil, "plain text error" end
return { greet = greet, step = step, raises = raises, returns_error = returns_error }
