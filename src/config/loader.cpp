// Reads pgbouncer.ini (and its %includes) into a Config: lexes PgBouncer's file grammar, then
// dispatches each entry through inih to the [pgbouncer] / [databases] / [users] / [peers]
// handlers.
//
// Why the lexing is ours and not inih's: Debian's libinih is built with INI_MAX_LINE 200,
// inline ';' comments, ':' as a separator and indented lines as continuations. Each of those
// misreads a real pgbouncer.ini (a long auth_query or connection string, a password holding
// " ;x", an indented key), and inih knows no %include or quoted keys. So every line is lexed
// here with libusual cfparser's rules into a side table of items, and inih is handed a synthetic
// document of short token lines, one per item, whose names are item numbers:
//
//     [3]    section header of item 3, so inih tracks "the current section" for us
//     3=     item 3 itself, so an empty or unknown section still reaches the handler in order
//     4=     a key item; the handler looks up its real key, value, file and line in the table
//
// No value, ';' or long line ever reaches inih. It contributes the dispatch loop and the
// current-section bookkeeping; the grammar is entirely in lex_text() below.
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <ini.h>

#include "sluice/config/config.h"

#include "values.h"

namespace sluice {

namespace {

struct Item {
    bool is_section;
    std::string key;  // section name for a section item
    std::string value;
    size_t file;  // index into Lexed::files
    int line;
};

struct Lexed {
    std::vector<std::string> files;
    std::vector<Item> items;  // every entry before the first lexing error, in file order
    std::string err;          // the first lexing error, "" if none
    std::vector<std::string> warnings;
};

bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t';
}

bool is_space(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

// The characters of an unquoted key (cfparser: isalnum or one of "_.-*").
bool is_key_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == '*';
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_space(s.back()))
        s.remove_suffix(1);
    return s;
}

// Reads the whole file. Like PgBouncer's load_file() the text ends at a NUL byte, if any.
bool read_whole_file(const std::string& path, std::string& out, int& errnum) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        errnum = errno;
        return false;
    }
    out.clear();
    char buf[65536];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
        out.append(buf, n);
    bool ok = std::ferror(f) == 0;
    errnum = ok ? 0 : errno;
    std::fclose(f);
    if (!ok)
        return false;
    out.resize(std::strlen(out.c_str()));
    return true;
}

std::string where(const Lexed& lx, size_t file, int line) {
    return lx.files[file] + ":" + std::to_string(line) + ": ";
}

// The place as PgBouncer words its configuration errors (the lines operators grep for).
std::string pgb_place(const Lexed& lx, size_t file, int line) {
    return " in configuration (" + lx.files[file] + ":" + std::to_string(line) + ")";
}

std::string pgb_syntax(const Lexed& lx, size_t file, int line) {
    return "syntax error" + pgb_place(lx, file, line) + ", stopping loading";
}

std::string pgb_include(const Lexed& lx, size_t file, int line) {
    return "error processing include file" + pgb_place(lx, file, line) + ", stopping loading";
}

bool lex_file(const std::string& path, int depth, Lexed& lx, int& open_errno);

// Lexes one file's text into lx.items, recursing into %include. False on the first error.
bool lex_text(std::string_view text, size_t file, int depth, Lexed& lx) {
    int lineno = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view l = trim(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        lineno++;
        if (l.empty() || l.front() == '#' || l.front() == ';')
            continue;

        if (l.substr(0, 8) == "%include" && (l.size() == 8 || is_blank(l[8]))) {
            std::string inc(trim(l.substr(8)));
            if (inc.empty()) {
                lx.err = where(lx, file, lineno) + "%include: file name missing\n" +
                         pgb_include(lx, file, lineno);
                return false;
            }
            if (depth >= kMaxIncludeDepth) {
                lx.err = where(lx, file, lineno) + "%include: nesting too deep (more than " +
                         std::to_string(kMaxIncludeDepth) + " levels)\n" +
                         pgb_include(lx, file, lineno);
                return false;
            }
            int open_errno = 0;
            if (!lex_file(inc, depth + 1, lx, open_errno)) {
                if (lx.err.empty() && open_errno == EISDIR) {
                    // libusual reads a directory as an empty file: PgBouncer goes on with the
                    // next line without a word. So do we, but say so.
                    lx.warnings.push_back(where(lx, file, lineno) + "%include " + inc +
                                          ": is a directory, nothing read from it");
                    continue;
                }
                if (lx.err.empty())
                    lx.err = "could not load file \"" + inc + "\": " + std::strerror(open_errno) +
                             "\n" + pgb_include(lx, file, lineno);
                return false;
            }
            continue;
        }

        if (l.front() == '[') {
            size_t close = l.find(']');
            // after "]" only blanks or a comment (cfparser would read on as a new line)
            std::string_view after =
                close == std::string_view::npos ? "" : trim(l.substr(close + 1));
            if (close == std::string_view::npos ||
                (!after.empty() && after.front() != ';' && after.front() != '#')) {
                lx.err = pgb_syntax(lx, file, lineno);
                return false;
            }
            lx.items.push_back(Item{true, std::string(l.substr(1, close - 1)), {}, file, lineno});
            continue;
        }

        std::string_view key;
        size_t pos = 0;
        if (l.front() == '\'') {
            size_t q = l.find('\'', 1);
            if (q == std::string_view::npos) {
                lx.err = pgb_syntax(lx, file, lineno);
                return false;
            }
            key = l.substr(1, q - 1);
            pos = q + 1;
        } else {
            while (pos < l.size() && is_key_char(l[pos]))
                pos++;
            key = l.substr(0, pos);
        }
        while (pos < l.size() && is_blank(l[pos]))
            pos++;
        if (key.empty() && l.front() != '\'') {
            lx.err = pgb_syntax(lx, file, lineno);
            return false;
        }
        if (pos >= l.size() || l[pos] != '=') {
            lx.err = where(lx, file, lineno) + std::string(key) + ": syntax error, expected '='\n" +
                     pgb_syntax(lx, file, lineno);
            return false;
        }
        pos++;
        while (pos < l.size() && is_blank(l[pos]))
            pos++;
        lx.items.push_back(Item{false, std::string(key), std::string(l.substr(pos)), file, lineno});
    }
    return true;
}

// Reads and lexes `path`. A read failure returns false with lx.err empty and open_errno set,
// for the caller to report at its own position.
bool lex_file(const std::string& path, int depth, Lexed& lx, int& open_errno) {
    std::string text;
    if (!read_whole_file(path, text, open_errno))
        return false;
    lx.files.push_back(path);
    return lex_text(text, lx.files.size() - 1, depth, lx);
}

// State shared with the inih callback.
struct Dispatch {
    const Lexed& lx;
    Config& cfg;
    std::string err;
    bool failed = false;
    bool got_main_sect = false;  // a [pgbouncer] header was seen
};

bool item_index(const char* s, size_t limit, size_t& out) noexcept {
    std::string_view v(s);
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    return ec == std::errc() && end == v.data() + v.size() && out < limit;
}

bool known_section(std::string_view s) noexcept {
    return s == "pgbouncer" || s == "databases" || s == "users" || s == "peers";
}

// Applies key item `it` in section `sect`; false with msg (without the file:line prefix).
bool apply_item(Config& cfg, std::string_view sect, const Item& it, std::string& msg) {
    std::string e;
    if (sect == "pgbouncer") {
        if (apply_setting(cfg.settings, it.key, it.value, e)) {
            if (const SettingInfo* info = find_setting(it.key))
                cfg.keys_in_file.push_back(info->name);
            return true;
        }
    } else if (sect == "databases") {
        DatabaseEntry db;
        db.name = it.key;
        if (it.key == "pgbouncer") {
            e = "database name \"pgbouncer\" is reserved";
        } else if (parse_database_entry(it.value, db, e)) {
            for (DatabaseEntry& old : cfg.databases) {
                if (old.name == db.name) {
                    old = std::move(db);
                    return true;
                }
            }
            cfg.databases.push_back(std::move(db));
            return true;
        }
    } else if (sect == "users") {
        UserEntry u;
        u.name = it.key;
        if (parse_user_entry(it.value, u, e)) {
            for (UserEntry& old : cfg.users) {
                if (old.name == u.name) {
                    old = std::move(u);
                    return true;
                }
            }
            cfg.users.push_back(std::move(u));
            return true;
        }
    } else {
        PeerEntry p;
        int64_t id = 0;
        if (!cfgval::parse_int_dec(it.key, id) || id < 1 || id > 65535) {
            e = "peer id must be an integer from 1 to 65535";
        } else {
            p.peer_id = static_cast<int>(id);
            if (parse_peer_entry(it.value, p, e)) {
                for (PeerEntry& old : cfg.peers) {
                    if (old.peer_id == p.peer_id) {
                        old = std::move(p);
                        return true;
                    }
                }
                cfg.peers.push_back(std::move(p));
                return true;
            }
        }
    }
    msg = it.key + ": " + e;
    return false;
}

// inih handler: `name` is an item number, `section` the number of the enclosing section item.
// A C callback, so noexcept; it stops applying after the first failure (Debian's inih keeps
// calling after a handler error).
int on_ini_entry(void* user, const char* section, const char* name, const char*) noexcept {
    auto& d = *static_cast<Dispatch*>(user);
    if (d.failed)
        return 0;
    const auto& items = d.lx.items;
    size_t idx = 0;
    if (!item_index(name, items.size(), idx)) {
        d.err = "internal error: bad config item token";
        d.failed = true;
        return 0;
    }
    const Item& it = items[idx];
    std::string msg;
    bool ok = true;
    if (it.is_section) {
        ok = known_section(it.key);
        if (!ok)
            msg = "unknown section [" + it.key + "]";
        else if (it.key == "pgbouncer")
            d.got_main_sect = true;
    } else {
        size_t sidx = 0;
        if (*section == '\0') {
            ok = false;
            msg = it.key + ": value without section";
        } else if (!item_index(section, items.size(), sidx)) {
            ok = false;
            msg = "internal error: bad config section token";
        } else {
            ok = apply_item(d.cfg, items[sidx].key, it, msg);
        }
    }
    if (!ok) {
        // Ours (what is wrong) first, then PgBouncer's line.
        d.err = where(d.lx, it.file, it.line) + msg + "\n" +
                (it.is_section ? "invalid section \"" + it.key + "\""
                               : "invalid value \"" + it.value + "\" for parameter " + it.key) +
                pgb_place(d.lx, it.file, it.line);
        d.failed = true;
        return 0;
    }
    return 1;
}

}  // namespace

bool set_in_file(const Config& cfg, std::string_view name) noexcept {
    for (std::string_view k : cfg.keys_in_file)
        if (k == name)
            return true;
    return false;
}

bool load_config(const std::string& path, Config& out, std::string& err) {
    out = Config{};
    out.settings.conffile = path;

    Lexed lx;
    int open_errno = 0;
    if (!lex_file(path, 0, lx, open_errno) && lx.err.empty()) {
        err = "could not load file \"" + path + "\": " + std::strerror(open_errno);
        return false;
    }
    out.warnings = std::move(lx.warnings);

    std::string doc;
    for (size_t i = 0; i < lx.items.size(); i++) {
        std::string n = std::to_string(i);
        if (lx.items[i].is_section)
            doc += "[" + n + "]\n";
        doc += n + "=\n";
    }
    Dispatch d{lx, out, {}, false, false};
    int rc = ini_parse_string(doc.c_str(), on_ini_entry, &d);
    if (!d.err.empty()) {
        err = d.err;
        return false;
    }
    if (rc != 0) {
        err = path + ": internal error: inih failed (" + std::to_string(rc) + ")";
        return false;
    }
    if (!lx.err.empty()) {
        err = lx.err;
        return false;
    }
    // libusual's cf_load_file(): a file that parses but never opens [pgbouncer] (empty,
    // truncated by a deploy, only [databases]) is refused rather than run on the defaults.
    if (!d.got_main_sect) {
        err = "load_init_file: main section missing from config file";
        return false;
    }
    return true;
}

}  // namespace sluice
