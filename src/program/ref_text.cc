// RefText helpers; see ref_text.h.
#include "program/ref_text.h"

#include "program/json_text.h"

namespace exmode {

void appendShifted(std::string& text, Refs& refs, std::string_view payload,
                   const Refs& payload_refs) {
  const auto base = static_cast<std::uint32_t>(text.size());
  for (Ref r : payload_refs) refs.push_back({r.value, r.offset + base, r.length});
  text += payload;
}

void appendUnion(std::string& text, Refs& refs, const Argument& arg) {
  text += '{';
  json::appendString(text, arg.kind);
  text += ": ";
  appendShifted(text, refs, arg.payload.text, arg.payload.refs);
  text += '}';
}

void appendResolved(std::string& out, const RefText& ref_text) {
  std::size_t pos = 0;
  for (const Ref& ref : ref_text.refs) {
    out.append(ref_text.text, pos, ref.offset - pos);
    json::appendString(out, ref.value->name());
    pos = ref.offset + ref.length;
  }
  out.append(ref_text.text, pos);
}

}  // namespace exmode
