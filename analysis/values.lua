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

function Pandoc(doc)
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
