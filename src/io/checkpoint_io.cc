#include "io/checkpoint_io.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;

namespace {
// More than the kernel's read-around window for a faulting mapped read (128 KiB by default).
constexpr size_t kReadAround = size_t{2} << 20;
}  // namespace

std::optional<int64_t> leading_int(std::string_view s, size_t* used) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data() || v < 0) return std::nullopt;
  *used = static_cast<size_t>(p - s.data());
  return v;
}

std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name) {
  if (!name.starts_with(kLayerPrefix)) return std::nullopt;
  std::string_view tail = name.substr(kLayerPrefix.size());
  size_t used = 0;
  auto layer = leading_int(tail, &used);
  if (!layer || used >= tail.size() || tail[used] != '.') return std::nullopt;
  return std::pair{*layer, tail.substr(used + 1)};
}

nlohmann::ordered_json read_json_file(const fs::path& path) {
  try {
    return nlohmann::ordered_json::parse(read_file(path));
  } catch (const nlohmann::ordered_json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

std::string dump_hf_json(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
}

uint64_t shard_bytes_like(const TensorStore& store) {
  if (store.file_count() <= 1) return std::numeric_limits<uint64_t>::max();
  uint64_t max_shard = 0;
  for (size_t f = 0; f < store.file_count(); ++f) {
    uint64_t bytes = 0;
    for (const TensorInfo& t : store.file(f).tensors()) bytes += t.nbytes;
    max_shard = std::max(max_shard, std::max<uint64_t>(bytes, 1));
  }
  return max_shard;
}

void drop_copied_pages(const SafeTensorsFile& file, std::span<const std::byte> bytes) {
  const std::span<const std::byte> mapped = file.mapping().bytes();
  const size_t back = std::min<size_t>(kReadAround, bytes.data() - mapped.data());
  file.mapping().advise({bytes.data() - back, bytes.size() + back}, MemoryAdvice::kDontNeed);
}

void copy_side_files(const fs::path& in, const fs::path& out,
                     const std::function<bool(const std::string&)>& skip) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(in)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" || name == kSafetensorsIndex ||
        name.ends_with(".safetensors") || (skip && skip(name)))
      continue;
    fs::copy_file(entry.path(), out / name, ec);
    if (ec) fail("{}: cannot copy to {}: {}", entry.path().string(), out.string(), ec.message());
  }
}

std::string card_with_note(const std::string& card, const std::string& note) {
  if (card.starts_with("---\n")) {
    const size_t end = card.find("\n---\n", 3);
    if (end != std::string::npos) {
      const size_t body = end + 5;
      return card.substr(0, body) + "\n" + note + card.substr(body);
    }
  }
  return note + card;
}

}  // namespace whittle
