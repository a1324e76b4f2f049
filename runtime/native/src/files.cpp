#include "files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "error.hpp"

namespace pvlm_core {

std::string file_kind(unsigned mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

int open_regular(const std::filesystem::path& path, pvlm_status code) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(code, path.string() + ": unreadable (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    unsigned mode = st.st_mode;
    ::close(fd);
    throw Error(code, path.string() + ": " + file_kind(mode) + ", not a regular file; refusing to read it");
  }
  return fd;
}

std::string read_regular(const std::filesystem::path& path, size_t max_bytes, pvlm_status code) {
  int fd = open_regular(path, code);
  struct stat st {};
  ::fstat(fd, &st);
  if (size_t(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error(code, path.string() + ": " + std::to_string(st.st_size) + " bytes, more than the " +
                          std::to_string(max_bytes) + " byte limit");
  }
  std::string data;
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    data.append(buf, size_t(n));
    if (data.size() > max_bytes) break;  // grew while being read
  }
  int err = errno;
  ::close(fd);
  if (n < 0) throw Error(code, path.string() + ": unreadable (" + std::strerror(err) + ")");
  if (data.size() > max_bytes) throw Error(code, path.string() + ": more than the " + std::to_string(max_bytes) + " byte limit");
  return data;
}

}  // namespace pvlm_core
