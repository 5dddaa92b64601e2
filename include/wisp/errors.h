// Typed errors thrown by the wisp library. Every failure a user can cause (bad file, bad option,
// corrupt model) surfaces as one of these, never as a crash or an abort.
#pragma once

#include <stdexcept>
#include <string>

namespace wisp {

enum class ErrorKind {
  kIo,               // a file is missing, unreadable or cannot be written
  kAudio,            // the input is not decodable audio, or holds no samples
  kModel,            // a model file is truncated, foreign, of another version or inconsistent
  kInvalidArgument,  // an unsupported option or value
  kInternal,         // a broken invariant inside wisp
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

class IoError : public Error {
 public:
  explicit IoError(const std::string& m) : Error(ErrorKind::kIo, m) {}
};
class AudioError : public Error {
 public:
  explicit AudioError(const std::string& m) : Error(ErrorKind::kAudio, m) {}
};
class ModelError : public Error {
 public:
  explicit ModelError(const std::string& m) : Error(ErrorKind::kModel, m) {}
};
class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& m) : Error(ErrorKind::kInvalidArgument, m) {}
};
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& m) : Error(ErrorKind::kInternal, m) {}
};

}  // namespace wisp
