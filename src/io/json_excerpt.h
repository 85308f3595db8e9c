// json_excerpt: a JSON value as error-message text without serializing containers. dump() recurses
// once per level of nesting, and hostile input (a safetensors header, a config.json, a
// tokenizer.json) can nest millions of levels deep; containers are named by type instead.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace whittle {

// For nlohmann::json and nlohmann::ordered_json alike.
template <class Json>
std::string json_excerpt(const Json& value) {
  if (value.is_structured()) return std::string("an ") + value.type_name();
  std::string text = value.dump();
  return text.size() > 64 ? text.substr(0, 64) + "..." : text;
}

}  // namespace whittle
