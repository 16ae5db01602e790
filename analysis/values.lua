-- The values the chapters cite: [r.<chapter>.<value>]{.value} and [provenance.<value>]{.value} become the text
-- the pre-render step wrote into _parts/values.yml and _parts/provenance.yml (metadata-files; analysis/pages.py).
-- One pass over each document, with the values already parsed by pandoc as metadata (inline Markdown, escaped
-- as literal text by the package). A key with no value is shown as **?key** and warned about, as Quarto does
-- for a missing {{< meta >}}. (Quarto's meta shortcode does the same but costs about 25 ms a call: 2.5 s for
-- each print book of this report.)

local function lookup(meta, key)
  local node = meta
  for name in key:gmatch("[^.]+") do
    if type(node) ~= "table" then
      return nil
    end
    node = node[name]
  end
  return node
end

local function fill_values(doc)
  return doc:walk({
    Span = function(span)
      if not span.classes:includes("value") then
        return nil
      end
      local key = pandoc.utils.stringify(span.content)
      local value = lookup(doc.meta, key)
      local kind = pandoc.utils.type(value)
      if kind == "Inlines" then
        return value
      elseif kind == "string" or kind == "boolean" or kind == "number" then
        return pandoc.Inlines(tostring(value))
      end
      io.stderr:write("WARNING: no value for [" .. key .. "]{.value} (is the pre-render step's _parts/ written?)\n")
      return pandoc.Strong(pandoc.Inlines("?" .. key))
    end,
  })
end

-- ::: {.part file="_parts/<chapter>/<part>.md"} ::: becomes that file's Markdown, read when the document is
-- filtered (after the pre-render step has written it; Quarto expands {{< include >}} before that step). The filter
-- runs at pre-ast, before Quarto reads figure and table divs, so those in a part are numbered like the chapters'.
local function read_part(div)
  if not div.classes:includes("part") then
    return nil
  end
  local rel = div.attributes["file"]
  local root = (quarto and quarto.project and quarto.project.directory) or "."
  local fh = io.open(root .. "/" .. rel, "r")
  if fh == nil then
    io.stderr:write("WARNING: no part " .. rel .. " (is the pre-render step's _parts/ written?)\n")
    return pandoc.Para(pandoc.Strong(pandoc.Inlines("?" .. rel)))
  end
  local text = fh:read("a")
  fh:close()
  -- the part's links are relative to the project: written from the project's root ("/figures/x.png"), which
  -- Quarto resolves for each page (HTML: relative to the page; the PDF and Word books: to the project)
  local function fix(path)
    if path:match("^%a[%w+.-]*:") or path:match("^/") or path:match("^#") then
      return path
    end
    return "/" .. path
  end
  return pandoc.read(text, "markdown").blocks:walk({
    Image = function(img) img.src = fix(img.src); return img end,
    Link = function(link) link.target = fix(link.target); return link end,
  })
end

-- Quarto's conditional content by format (::: {.content-visible when-format="html"} and the like): false when a
-- div is dropped from this format, so the parts inside are not read for it (the HTML viewer is 0.6 MB of markup
-- that the PDF and Word books would parse for nothing). Anything else (a profile, metadata, several conditions)
-- is left to Quarto: true.
local function shown_in_this_format(div)
  local visible, hidden = div.classes:includes("content-visible"), div.classes:includes("content-hidden")
  if not (visible or hidden) then
    return true
  end
  local n = 0
  for _ in pairs(div.attributes) do
    n = n + 1
  end
  local when, unless = div.attributes["when-format"], div.attributes["unless-format"]
  if n ~= 1 or (when == nil and unless == nil) then
    return true
  end
  local match = quarto.doc.is_format(when or unless)
  if unless ~= nil then
    match = not match
  end
  return (visible and match) or (hidden and not match)
end

-- the parts first (top down, skipping what this format drops), so the values they cite are filled in with the
-- chapters' own
function Pandoc(doc)
  return fill_values(doc:walk({
    traverse = "topdown",
    Div = function(div)
      if not shown_in_this_format(div) then
        return div, false
      end
      return read_part(div)
    end,
  }))
end
