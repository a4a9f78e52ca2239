local function work(n) return n * 2 end
return { work = work }
