-- Legato's Lua kernel: the text module (RE2 regexps, diffs, splitters: worker/text_ops.py).
-- Loaded by worker/kernel.lua.

local S = ...
local type, ipairs, setmetatable, getmetatable = type, ipairs, setmetatable, debug.getmetatable
local sformat = string.format
local make_error, KIND, errors, crypto_arg, pure_op = S.make_error, S.KIND, S.errors, S.crypto_arg, S.pure_op
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ text
-- Wippy's text module (worker/text_ops.py): RE2 regular expressions, diff-match-patch, splitters.
-- Every operation is a pure function of its arguments (diffs are bounded by a step budget, not a
-- clock), so workflows call them directly: nothing is recorded, and a replay computes the same.
-- Regexps, differs and splitters are Lua objects holding what they were made from (the pattern,
-- the checked options); each method hands that to the host again (patterns compile once there, in
-- a bounded cache). Bad arguments: nil, err (kind Invalid).
local function new_text()
    local A = crypto_arg
    local function bad_self(what)
        return nil, make_error(what .. ": call it as a method (with a colon)", KIND.INVALID, false)
    end
    local RE = { __name = "text.Regexp", __metatable = "text.Regexp" }
    local RM = {}
    RE.__index = RM
    local function re_method(name, fn)
        RM[name] = function(self, ...)
            if getmetatable(self) ~= RE then return bad_self("re:" .. name) end
            return fn(self, ...)
        end
    end
    for _, name in ipairs({ "match_string", "find_string", "find_all_string", "find_string_submatch",
        "find_all_string_submatch", "find_string_index", "find_all_string_index" }) do
        re_method(name, function(self, s) return pure_op("text.re." .. name, A(self._p), A(s)) end)
    end
    re_method("replace_all_string", function(self, s, repl)
        return pure_op("text.re.replace_all_string", A(self._p), A(s), A(repl))
    end)
    re_method("split", function(self, s, n) return pure_op("text.re.split", A(self._p), A(s), n) end)
    re_method("num_subexp", function(self) return pure_op("text.re.num_subexp", A(self._p)) end)
    re_method("subexp_names", function(self) return pure_op("text.re.subexp_names", A(self._p)) end)
    re_method("string", function(self) return self._p end)

    local DIFF = { __name = "text.Differ", __metatable = "text.Differ" }
    local DM = {}
    DIFF.__index = DM
    local function diff_method(name, fn)
        DM[name] = function(self, ...)
            if getmetatable(self) ~= DIFF then return bad_self("diff:" .. name) end
            return fn(self, ...)
        end
    end
    diff_method("compare", function(self, a, b) return pure_op("text.diff.compare", self._o, A(a), A(b)) end)
    diff_method("patch_make", function(self, a, b) return pure_op("text.diff.patch_make", self._o, A(a), A(b)) end)
    for _, name in ipairs({ "summarize", "pretty_text", "pretty_html" }) do
        diff_method(name, function(self, diffs) return pure_op("text.diff." .. name, diffs) end)
    end
    diff_method("patch_apply", function(self, patches, s)
        local r, err = pure_op("text.diff.patch_apply", self._o, patches, A(s))
        if r == nil then return nil, err end
        return r[1], r[2]
    end)

    local SPLIT = { __name = "text.Splitter", __metatable = "text.Splitter" }
    local SM = {}
    SPLIT.__index = SM
    function SM.split_text(self, s)
        if getmetatable(self) ~= SPLIT then return bad_self("splitter:split_text") end
        return pure_op("text.splitter.split_text", self._o, A(s))
    end
    -- pages: {{content = "...", metadata = {...}}, ...} -> a chunk per piece, with its page's metadata
    function SM.split_batch(self, pages)
        if getmetatable(self) ~= SPLIT then return bad_self("splitter:split_batch") end
        if type(pages) ~= "table" then
            return nil, make_error("splitter:split_batch: expected a table of {content, metadata}", KIND.INVALID, false)
        end
        local out = {}
        for i = 1, #pages do
            local page = pages[i]
            if type(page) ~= "table" then
                return nil, make_error(sformat("splitter:split_batch: page %d is not a table", i), KIND.INVALID, false)
            end
            local chunks, err = pure_op("text.splitter.split_text", self._o, A(page.content))
            if chunks == nil then return nil, errors.wrap(err, sformat("page %d", i)) end
            for j = 1, #chunks do out[#out + 1] = { content = chunks[j], metadata = page.metadata } end
        end
        return out, nil
    end
    local function splitter(kind)
        return function(options)
            local o, err = pure_op("text.splitter.new", kind, options)
            if o == nil then return nil, err end
            return setmetatable({ _o = o }, SPLIT), nil
        end
    end

    return {
        regexp = {
            compile = function(pattern)
                local ok, err = pure_op("text.re.compile", A(pattern))
                if not ok then return nil, err end
                return setmetatable({ _p = pattern }, RE), nil
            end,
        },
        diff = {
            new = function(options)
                local o, err = pure_op("text.diff.new", options)
                if o == nil then return nil, err end
                return setmetatable({ _o = o }, DIFF), nil
            end,
        },
        splitter = { recursive = splitter("recursive"), markdown = splitter("markdown") },
    }
end

S.new_text = new_text
