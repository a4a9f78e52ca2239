-- a workflow that tries to spawn a process: refused with a clear error (not supported yet)
local function spawn_process()
    local pid, err = process.spawn("pr:echo", "pr:host")
    if pid then return "spawned" end
    return nil, err
end

return {spawn_process = spawn_process}
