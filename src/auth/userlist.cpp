// auth_file loader: turns userlist.txt into the name -> secret map the auth code consults.
// Format as PgBouncer's loader.c reads it, but a broken line is skipped instead of ending
// the load (PgBouncer stops at the first broken line and keeps only what came before).
#include "sluice/auth/userlist.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "sluice/util/log.h"
#include "sluice/util/quoted.h"

namespace sluice {
namespace {

bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

// Starts with PgBouncer's "broken auth file", the phrase log collectors match.
void warn_line(std::string_view source, size_t lineno, const char* what) {
    log_error("broken auth file: %.*s:%zu: %s; line skipped", static_cast<int>(source.size()),
              source.data(), lineno, what);
}

struct FileClose {
    void operator()(FILE* f) const noexcept { std::fclose(f); }
};

}  // namespace

void parse_userlist(std::string_view text, std::string_view source, UserList& out) {
    size_t lineno = 0;
    std::string name, secret;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        lineno++;

        size_t pos = 0;
        while (pos < line.size() && is_blank(line[pos]))
            pos++;
        if (pos == line.size() || line[pos] == ';' || line[pos] == '#')
            continue;
        if (line[pos] != '"') {
            warn_line(source, lineno, "expected \"name\" \"secret\"");
            continue;
        }
        if (!read_quoted(line, pos, name)) {
            warn_line(source, lineno, "unterminated quoted user name");
            continue;
        }
        // Like PgBouncer, whatever separates the two fields is skipped up to the next quote.
        pos = line.find('"', pos);
        if (pos == std::string_view::npos) {
            warn_line(source, lineno, "missing quoted secret");
            continue;
        }
        if (!read_quoted(line, pos, secret)) {
            warn_line(source, lineno, "unterminated quoted secret");
            continue;
        }
        if (name.empty()) {
            warn_line(source, lineno, "empty user name");
            continue;
        }
        out.insert_or_assign(name, secret);  // the rest of the line is ignored
    }
}

bool load_userlist(const std::string& path, UserList& out, std::string& err) {
    std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        err = std::strerror(errno);
        return false;
    }
    std::string text;
    char buf[8192];
    for (;;) {
        size_t n = std::fread(buf, 1, sizeof buf, f.get());
        text.append(buf, n);
        if (n < sizeof buf)
            break;
    }
    if (std::ferror(f.get())) {
        err = std::strerror(errno);
        return false;
    }
    UserList users;
    parse_userlist(text, path, users);
    out.swap(users);
    return true;
}

}  // namespace sluice
