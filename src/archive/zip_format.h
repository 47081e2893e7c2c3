// The zip record layouts exmode reads and writes, as constants, and little-endian helpers.
//
// We read and write zip ourselves instead of using libzip or minizip: neither can place a
// record's data at a 64-byte boundary with torch's 'FB' padding extra field, and neither
// lets us copy a record's stored bytes file to file or keep a run of records exactly as
// they were. The subset needed (stored records, zip64, no encryption, one disk) is small.
#pragma once

#include <libdeflate.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace exmode::archive::zip {

inline constexpr std::uint32_t kLocalHeaderSignature = 0x04034b50;           // "PK\3\4"
inline constexpr std::uint32_t kCentralHeaderSignature = 0x02014b50;         // "PK\1\2"
inline constexpr std::uint32_t kEndOfCentralDirSignature = 0x06054b50;       // "PK\5\6"
inline constexpr std::uint32_t kZip64EndOfCentralDirSignature = 0x06064b50;  // "PK\6\6"
inline constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;          // "PK\6\7"

// Fixed sizes of the records, without their variable-length tails.
inline constexpr std::size_t kLocalHeaderSize = 30;
// Where a local header holds the CRC-32 (after signature, versions, flags, method, time, date).
inline constexpr std::size_t kLocalHeaderCrcOffset = 14;
inline constexpr std::size_t kCentralHeaderSize = 46;
inline constexpr std::size_t kEndOfCentralDirSize = 22;
inline constexpr std::size_t kZip64EndOfCentralDirSize = 56;
inline constexpr std::size_t kZip64LocatorSize = 20;
inline constexpr std::size_t kMaxCommentSize = 0xFFFF;
// The "size of zip64 end of central directory record" field excludes the leading 12 bytes.
inline constexpr std::uint64_t kZip64EndOfCentralDirRecordSize = kZip64EndOfCentralDirSize - 12;

// Extra fields: a 2-byte id and a 2-byte length, then the payload.
inline constexpr std::size_t kExtraHeaderSize = 4;
inline constexpr std::uint16_t kZip64ExtraId = 0x0001;
// torch's padding field: bytes 'F','B', then `length` bytes of 'Z'.
inline constexpr std::uint16_t kPaddingExtraId = 0x4246;
inline constexpr char kPaddingByte = 'Z';

// A 16- or 32-bit field holding its maximum means "the real value is in a zip64 record".
inline constexpr std::uint16_t kMax16 = 0xFFFF;
inline constexpr std::uint32_t kMax32 = 0xFFFFFFFF;

inline constexpr std::uint16_t kMethodStored = 0;
inline constexpr std::uint16_t kFlagEncrypted = 0x0001;
inline constexpr std::uint16_t kFlagStrongEncryption = 0x0040;
inline constexpr std::uint16_t kVersionNeeded = 20;
inline constexpr std::uint16_t kVersionNeededZip64 = 45;
// torch writes DOS time and date 0 (Python's zipfile shows 1980-00-00 00:00:00); fixed
// values also make the output depend on the records only.
inline constexpr std::uint16_t kDosTime = 0;
inline constexpr std::uint16_t kDosDate = 0;

// Little-endian loads from memory the caller has bounds-checked.
template <typename T>
T loadLE(const char* p) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value = static_cast<T>(
        value | static_cast<T>(static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i)));
  }
  return value;
}

// Little-endian stores appended to a byte buffer.
template <typename T>
void appendLE(std::string& out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<char>(static_cast<unsigned char>((value >> (8 * i)) & 0xFF)));
  }
}

// The CRC-32 zip stores for a record's bytes. CRCs chain: the CRC of a concatenation is
// crc32Update(crc32Of(a), b).
inline std::uint32_t crc32Update(std::uint32_t crc, std::string_view data) {
  // libdeflate_crc32 answers a null buffer with 0 (its initial value), whatever `crc` is:
  // an empty view with no data (a default string_view) must leave the CRC as it is.
  if (data.empty()) return crc;
  return ::libdeflate_crc32(crc, data.data(), data.size());
}
inline std::uint32_t crc32Of(std::string_view data) { return crc32Update(0, data); }
// The same over bytes given in pieces (a record written without joining them).
inline std::uint32_t crc32Update(std::uint32_t crc, std::span<const std::string_view> chunks) {
  for (std::string_view chunk : chunks) crc = crc32Update(crc, chunk);
  return crc;
}

// Reads fields in sequence from a bounds-checked window of bytes. Reading past the end of
// the window sets a sticky failure flag and yields zeros, so a parser can read a whole
// header and check ok() once.
class FieldReader {
 public:
  explicit FieldReader(std::string_view bytes) : bytes_(bytes) {}

  std::uint16_t u16() { return next<std::uint16_t>(); }
  std::uint32_t u32() { return next<std::uint32_t>(); }
  std::uint64_t u64() { return next<std::uint64_t>(); }
  std::string_view bytes(std::size_t count) {
    if (!take(count)) return {};
    return bytes_.substr(pos_ - count, count);
  }
  void skip(std::size_t count) { take(count); }
  bool ok() const { return ok_; }
  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }

 private:
  template <typename T>
  T next() {
    if (!take(sizeof(T))) return 0;
    return loadLE<T>(bytes_.data() + pos_ - sizeof(T));
  }
  bool take(std::size_t count) {
    if (!ok_ || count > bytes_.size() - pos_) {
      ok_ = false;
      return false;
    }
    pos_ += count;
    return true;
  }

  std::string_view bytes_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace exmode::archive::zip
