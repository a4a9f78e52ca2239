local function main()
    return os.time()
end
return { main = main }
