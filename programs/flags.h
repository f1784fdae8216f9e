// Command-line and config-file flags for the microflex programs: "--key=value",
// "--key value", bare "--key" for booleans, and config files of "key = value" lines with
// '#' comments. Every problem is a UsageError, which the programs report with exit code 2.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace microflex::flags {

class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& msg) : std::runtime_error(msg) {}
};

inline std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// A value must be a number as a whole: a '\0' inside it (possible in a config file) ends
// the C string strtoll and strtod see, so the end is checked against the std::string's.
inline int64_t parse_int(const std::string& key, const std::string& v, int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || end != v.c_str() + v.size() || errno != 0)
    throw UsageError("--" + key + " expects an integer, got '" + v + "'");
  if (x < min_value)
    throw UsageError("--" + key + " must be >= " + std::to_string(min_value) + ", got " + v);
  return x;
}

inline double parse_double(const std::string& key, const std::string& v, double min_value) {
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || errno != 0 || !(x == x) || x > 1e300 ||
      x < -1e300)
    throw UsageError("--" + key + " expects a finite number, got '" + v + "'");
  if (x < min_value) {
    char bound[32];
    std::snprintf(bound, sizeof(bound), "%g", min_value);
    throw UsageError("--" + key + " must be >= " + bound + ", got " + v);
  }
  return x;
}

inline bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  throw UsageError("--" + key + " expects true or false, got '" + v + "'");
}

// The whole text of a config file. A directory opens like a file and fails on the first
// read (badbit), so that is checked too rather than read as an empty config.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0)
    text.append(buf, static_cast<size_t>(in.gcount()));
  if (!in.eof() || in.bad()) throw UsageError("cannot read config file '" + path + "'");
  return text;
}

// A table of flags: each key has a setter that parses its value (throwing UsageError) and
// whether it is a boolean (then "--key" alone means true).
class Table {
 public:
  void add(const std::string& key, bool boolean, std::function<void(const std::string&)> set) {
    entries_[key] = {boolean, std::move(set)};
  }
  void set(const std::string& key, const std::string& value, const std::string& where) const {
    auto it = entries_.find(key);
    if (it == entries_.end())
      throw UsageError("unknown option '" + key + "'" + where + " (see --help)");
    it->second.set(value);
  }
  bool is_boolean(const std::string& key) const {
    auto it = entries_.find(key);
    return it != entries_.end() && it->second.boolean;
  }
  bool has(const std::string& key) const { return entries_.count(key) > 0; }

  // Applies the "key = value" lines of a config file's text; `name` (the file's path)
  // only appears in messages.
  void apply_text(const std::string& text, const std::string& name) const {
    std::istringstream in(text);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      const std::string where = " in " + name + " line " + std::to_string(n);
      const size_t hash = line.find('#');
      if (hash != std::string::npos) line.resize(hash);
      line = trim(line);
      if (line.empty()) continue;
      const size_t eq = line.find('=');
      if (eq == std::string::npos)
        throw UsageError("expected 'key = value'" + where + ", got '" + line + "'");
      set(trim(line.substr(0, eq)), trim(line.substr(eq + 1)), where);
    }
  }
  void apply_file(const std::string& path) const { apply_text(read_file(path), path); }

  // Parses argv into (key, value) pairs in order; "--config" values are returned
  // separately so a program can apply the file before the command-line overrides.
  std::vector<std::pair<std::string, std::string>> parse_args(int argc, char** argv,
                                                              std::string* config) const {
    std::vector<std::pair<std::string, std::string>> out;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0 || a.size() == 2)
        throw UsageError("unexpected argument '" + a + "' (options look like --key=value)");
      a = a.substr(2);
      std::string key = a, value;
      const size_t eq = a.find('=');
      if (eq != std::string::npos) {
        key = a.substr(0, eq);
        value = a.substr(eq + 1);
      } else if (key == "help") {
        value = "true";
      } else if (is_boolean(key)) {
        value = "true";
      } else if (key == "config" || has(key)) {
        if (i + 1 >= argc) throw UsageError("--" + key + " needs a value");
        value = argv[++i];
      } else {
        throw UsageError("unknown option '" + key + "' (see --help)");
      }
      if (key == "config") {
        if (config == nullptr) throw UsageError("unknown option 'config' (see --help)");
        if (value.empty()) throw UsageError("--config needs a value");
        *config = value;
      } else {
        out.emplace_back(key, value);
      }
    }
    return out;
  }

 private:
  struct Entry {
    bool boolean;
    std::function<void(const std::string&)> set;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace microflex::flags
