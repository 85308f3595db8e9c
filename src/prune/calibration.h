// Calibration data for expert pruning (REAP, issue 9): documents read from plain-text and jsonl
// files, tokenized, shuffled with a seed and packed into `samples` sequences of exactly `seqlen`
// tokens.
//
// Files. A `.jsonl` file (by extension, any case) holds one JSON object per line (blank lines
// skipped): {"text": string} is tokenized as is; {"messages": [...]} (OpenAI-style, optionally with
// "tools": [...]) is rendered with the model's chat template, add_generation_prompt false and the
// template's defaults otherwise (thinking on, reasoning of earlier turns cleared): what the REAP
// reference and transformers' apply_chat_template give (reap_vs_code D11). With GLM-5.1's template
// an assistant turn before the last user message gets "</think>", one after it "<think></think>"
// (unless it carries reasoning_content), and nothing closes the last turn. Other fields are
// ignored. Any other file is plain text in the form the bundled model's corpus uses
// (tools/train/docs_format.py): documents separated by "\n<|endoftext|>\n" (corpus form) or by a
// bare "<|endoftext|>" (stream form); a file without the separator is one document. Trailing
// newlines of a document are dropped, blank documents are skipped. Blank lines do not separate
// documents: prose and man pages have paragraphs.
//
// Tokens. BpeTokenizer::encode with added tokens parsed (HF `tokenizer(text)` with
// add_special_tokens=False; GLM-5's tokenizer.json has no post-processor, so nothing is prepended
// either way, D12). A text document therefore starts with its own first token; a conversation
// starts with the "[gMASK]<sop>" its template emits.
//
// Packing. Documents of all files (in file order, then line order) are shuffled by
// calibration_permutation(seed); each document's ids are followed by one `<|endoftext|>` and the
// whole stream is cut into consecutive `seqlen`-token samples, the first `samples` of them kept
// (the tail that does not fill a sample is dropped; a document cut at a sample's end continues at
// the start of the next, where the reference drops the rest of it). This
// is how the bundled model was trained (docs_format.py, train.py), and close to the reference,
// which packs samples back to back into 2048-token rows (reap_vs_code D9, confirmation 7). The
// reference puts a masked pad id 0 between samples; an in-distribution `<|endoftext|>` needs no
// mask, so every token of every sample is a real, routed token and the observer counts all of them
// (D5). Positions run 0..seqlen-1 across a sample and later documents attend to earlier ones, as in
// the reference. llm-compressor's examples instead truncate one sample per row; that calibrates on
// document starts only and is not done here.
//
// Every document is read and validated, but only as many as the samples need are tokenized. Files
// are read whole (read_file: at most 1 GiB each). Fewer than `samples` samples is not an
// error: the ones there are come back with a warning the caller must show; too few tokens for one
// sample is an Error saying how many are needed and how many the files hold.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace whittle {

class BpeTokenizer;
class Glm5ChatTemplate;

struct CalibrationOptions {
  int64_t samples = 128;  // sequences wanted, >= 1
  int64_t seqlen = 2048;  // tokens per sequence, >= 1
  uint64_t seed = 42;     // document order
};

// One document as read, before tokenization.
struct CalibrationDocument {
  std::string text;  // what is tokenized (a rendered conversation for "messages")
  size_t file = 0;   // index into the files given
  int64_t line = 0;  // 1-based line where it starts (the jsonl line)
};

struct CalibrationSet {
  std::vector<std::vector<int32_t>> samples;  // each exactly seqlen ids
  // Empty, or why there are fewer samples than asked for (show it to the user).
  std::string warning;
  int64_t documents = 0;       // documents read from all files
  int64_t documents_used = 0;  // of them, how many have tokens in the samples
  int64_t tokens_read = 0;     // tokens produced (separators included) before packing stopped
  int32_t separator = 0;       // the `<|endoftext|>` id after every document
  uint64_t fingerprint = 0;    // calibration_fingerprint(samples)
};

// Reads, tokenizes and packs; see the file comment. `chat` may be null when no file has
// "messages" (a conversation without it is an Error). Throws Error naming the file (and the line
// where there is one) for: no files, a missing/unreadable/non-regular file (a FIFO is refused
// without blocking), an empty file, invalid UTF-8, a malformed JSON line, a line that is not an
// object or has neither or both of "text" and "messages", a field of the wrong type, an empty
// "text", a conversation the template cannot render; also for samples or seqlen < 1, a tokenizer
// without `<|endoftext|>`, and too little data for one sample.
CalibrationSet load_calibration(std::span<const std::filesystem::path> files,
                                const BpeTokenizer& tokenizer, const Glm5ChatTemplate* chat,
                                const CalibrationOptions& options);

// The documents of `files`, in file order then file position, validated as load_calibration does.
std::vector<CalibrationDocument> read_calibration_documents(
    std::span<const std::filesystem::path> files, const Glm5ChatTemplate* chat);

// The order documents are packed in: a Fisher-Yates shuffle of 0..n-1 (for i = n-1 down to 1,
// swap p[i] with p[uniform(i + 1)]) driven by SplitMix64 seeded with `seed`, where uniform(b)
// draws x until x >= 2^64 mod b and returns x mod b. Spelled out (not std::shuffle or
// std::uniform_int_distribution, whose outputs differ between standard libraries) so that any
// build, or a Python script, packs the same tokens.
std::vector<size_t> calibration_permutation(size_t n, uint64_t seed);

// FNV-1a 64 over every id of every sample, in order, each as 4 little-endian bytes: identifies the
// exact calibration tokens (for reports).
uint64_t calibration_fingerprint(const std::vector<std::vector<int32_t>>& samples);

}  // namespace whittle
