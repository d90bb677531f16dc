// auth_hba_file / auth_ident_file: tokenizer, line parsers and the matcher. The grammar is the
// subset PgBouncer's hba.c accepts; a line that does not parse is logged with file:line and
// the reason, then PgBouncer's "could not parse hba config line N", and skipped; the rest of
// the file still loads.
#include "sluice/auth/hba.h"

#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <pwd.h>
#include <unistd.h>

#include "sluice/util/log.h"
#include "sluice/util/quoted.h"

namespace sluice {
namespace {

constexpr int kMaxNameFileDepth = 10;  // @file inside @file ...

enum class Tok : uint8_t {
    Ident,   // bare word
    String,  // "quoted" (never a keyword)
    Comma,
    Eol,
    Fail,  // unterminated quote
};

bool is_blank(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

// Splits one line as PgBouncer's hba.c does: blanks separate, '#' starts a comment, ',' is a
// token of its own, "..." is a quoted name ("" inside is one quote), anything else runs up to
// the next blank, ',', '#' or '"'. Keywords compare case-sensitively, as in PostgreSQL.
class Tokenizer {
public:
    explicit Tokenizer(std::string_view line) : line_(line) { next(); }
    Tok type() const noexcept { return type_; }
    const std::string& text() const noexcept { return text_; }
    bool is_kw(std::string_view kw) const noexcept { return type_ == Tok::Ident && text_ == kw; }
    // The line after the current token (ldap options).
    std::string_view rest() const noexcept { return line_.substr(pos_); }
    void next();

private:
    std::string_view line_;
    size_t pos_ = 0;
    Tok type_ = Tok::Comma;
    std::string text_;
};

void Tokenizer::next() {
    if (type_ == Tok::Eol || type_ == Tok::Fail)
        return;
    text_.clear();
    while (pos_ < line_.size() && is_blank(line_[pos_]))
        ++pos_;
    if (pos_ == line_.size() || line_[pos_] == '#') {
        pos_ = line_.size();
        type_ = Tok::Eol;
        return;
    }
    if (line_[pos_] == ',') {
        ++pos_;
        type_ = Tok::Comma;
        return;
    }
    if (line_[pos_] == '"') {
        type_ = read_quoted(line_, pos_, text_) ? Tok::String : Tok::Fail;
        return;
    }
    size_t i = pos_ + 1;
    while (i < line_.size() && line_[i] != ',' && line_[i] != '#' && line_[i] != '"' &&
           !is_blank(line_[i]))
        ++i;
    text_.assign(line_.substr(pos_, i - pos_));
    pos_ = i;
    type_ = Tok::Ident;
}

struct FileClose {
    void operator()(FILE* f) const noexcept { std::fclose(f); }
};

bool read_file(const std::string& path, std::string& out, std::string& err) {
    std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        err = std::strerror(errno);
        return false;
    }
    out.clear();
    char buf[8192];
    for (;;) {
        size_t n = std::fread(buf, 1, sizeof buf, f.get());
        out.append(buf, n);
        if (n < sizeof buf)
            break;
    }
    if (std::ferror(f.get())) {
        err = std::strerror(errno);
        return false;
    }
    return true;
}

// Calls fn(line, lineno) for each line of text (without the newline).
template <typename Fn> void for_each_line(std::string_view text, Fn fn) {
    size_t lineno = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        fn(line, ++lineno);
    }
}

// `@file` names are relative to the directory of the file that mentions them.
std::string resolve_relative(const std::string& parent, const std::string& name) {
    if (!name.empty() && name[0] == '/')
        return name;
    size_t slash = parent.rfind('/');
    if (slash == std::string::npos)
        return name;
    return parent.substr(0, slash + 1) + name;
}

bool read_name_file(const std::string& path, HbaNames& n, bool is_db, int depth, std::string& err);

// One database/user name token: a keyword, @file, or a name.
bool add_name(const Tokenizer& t, HbaNames& n, bool is_db, const std::string& parent, int depth,
              std::string& err) {
    if (t.type() == Tok::String) {
        n.names.push_back(t.text());
        return true;
    }
    if (t.type() != Tok::Ident) {
        err = t.type() == Tok::Fail ? "unterminated quoted name" : "expected a name";
        return false;
    }
    const std::string& s = t.text();
    if (s == "all") {
        n.all = true;
        return true;
    }
    if (is_db) {
        if (s == "sameuser") {
            n.sameuser = true;
            return true;
        }
        if (s == "samerole" || s == "samegroup") {
            err = s + " is not supported";
            return false;
        }
        if (s == "replication") {
            n.replication = true;
            return true;
        }
    }
    if (s[0] == '+') {
        err = "group names (" + s + ") are not supported";
        return false;
    }
    if (s[0] == '@') {
        if (s.size() == 1) {
            err = "empty @file name";
            return false;
        }
        return read_name_file(resolve_relative(parent, s.substr(1)), n, is_db, depth + 1, err);
    }
    n.names.push_back(s);
    return true;
}

// An @file: names separated by commas, blanks or newlines, '#' comments, as in PostgreSQL.
bool read_name_file(const std::string& path, HbaNames& n, bool is_db, int depth, std::string& err) {
    if (depth > kMaxNameFileDepth) {
        err = "@file nesting too deep at " + path;
        return false;
    }
    std::string text, why;
    if (!read_file(path, text, why)) {
        err = "could not read @file " + path + ": " + why;
        return false;
    }
    bool ok = true;
    for_each_line(text, [&](std::string_view line, size_t lineno) {
        if (!ok)
            return;
        for (Tokenizer t(line); t.type() != Tok::Eol; t.next()) {
            if (t.type() == Tok::Comma)
                continue;
            if (!add_name(t, n, is_db, path, depth, err)) {
                err += " (" + path + ":" + std::to_string(lineno) + ")";
                ok = false;
                return;
            }
        }
    });
    return ok;
}

// A comma-separated name column; leaves the tokenizer on the token after it.
bool parse_names(Tokenizer& t, HbaNames& n, bool is_db, const std::string& source,
                 std::string& err) {
    if (t.type() == Tok::Eol) {
        err = is_db ? "missing database name" : "missing user name";
        return false;
    }
    for (;;) {
        if (!add_name(t, n, is_db, source, 0, err))
            return false;
        t.next();
        if (t.type() != Tok::Comma)
            return true;
        t.next();
    }
}

bool parse_mask_bits(std::string_view s, HbaRule& r) {
    if (s.empty() || s.size() > 3)
        return false;
    unsigned bits = 0;
    for (char c : s) {
        if (c < '0' || c > '9')
            return false;
        bits = bits * 10 + static_cast<unsigned>(c - '0');
    }
    if (bits > (r.family == AF_INET ? 32u : 128u))
        return false;
    r.mask.fill(0);
    size_t i = 0;
    for (; i < bits / 8; ++i)
        r.mask[i] = 0xff;
    if (bits % 8)
        r.mask[i] = static_cast<uint8_t>(0xff << (8 - bits % 8));
    return true;
}

size_t addr_len(int family) noexcept {
    return family == AF_INET ? 4 : 16;
}

std::string addr_text(int family, const std::array<uint8_t, 16>& a) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (!inet_ntop(family, a.data(), buf, sizeof buf))
        return "?";
    return buf;
}

// The address column (and the netmask column when there is no /bits).
bool parse_address(Tokenizer& t, HbaRule& r, const std::string& source, size_t lineno,
                   std::string& err) {
    if (t.is_kw("all")) {
        r.addr_all = true;
        t.next();
        return true;
    }
    if (t.type() != Tok::Ident) {
        err = "missing address";
        return false;
    }
    std::string text = t.text();
    std::string bits;
    size_t slash = text.find('/');
    if (slash != std::string::npos) {
        bits = text.substr(slash + 1);
        text.resize(slash);
    }
    if (inet_pton(AF_INET6, text.c_str(), r.addr.data()) == 1) {
        r.family = AF_INET6;
    } else if (inet_pton(AF_INET, text.c_str(), r.addr.data()) == 1) {
        r.family = AF_INET;
    } else {
        err = "invalid address \"" + t.text() +
              "\" (only numeric IPv4/IPv6 addresses and `all` are supported)";
        return false;
    }
    if (slash != std::string::npos) {
        if (!parse_mask_bits(bits, r)) {
            err = "invalid mask length \"" + bits + "\"";
            return false;
        }
        t.next();
    } else {
        t.next();
        if (t.type() != Tok::Ident) {
            err = "missing netmask";
            return false;
        }
        if (inet_pton(r.family, t.text().c_str(), r.mask.data()) != 1) {
            err = "invalid netmask \"" + t.text() + "\"";
            return false;
        }
        t.next();
    }
    bool outside = false;
    for (size_t i = 0; i < addr_len(r.family); ++i)
        outside |= (r.addr[i] & ~r.mask[i]) != 0;
    if (outside) {
        // PgBouncer keeps such a line; it can never match (the address is compared unmasked).
        log_warning("%s:%zu: address does not match mask: %s / %s (this line never matches)",
                    source.c_str(), lineno, addr_text(r.family, r.addr).c_str(),
                    addr_text(r.family, r.mask).c_str());
    }
    return true;
}

bool parse_method(std::string_view s, AuthMethod& out) noexcept {
    static constexpr struct {
        const char* name;
        AuthMethod m;
    } kMethods[] = {{"trust", AuthMethod::Trust},
                    {"reject", AuthMethod::Reject},
                    {"md5", AuthMethod::Md5},
                    {"password", AuthMethod::Password},
                    {"peer", AuthMethod::Peer},
                    {"cert", AuthMethod::Cert},
                    {"scram-sha-256", AuthMethod::ScramSha256},
                    {"ldap", AuthMethod::Ldap}};
    for (const auto& e : kMethods) {
        if (s == e.name) {
            out = e.m;
            return true;
        }
    }
    return false;
}

enum class LineResult : uint8_t {
    Empty,  // blank or comment
    Rule,
    Bad,  // err says why
};

LineResult parse_hba_line(std::string_view line, size_t lineno, const std::string& source,
                          const IdentFile& ident, HbaRule& r, std::string& err) {
    Tokenizer t(line);
    if (t.type() == Tok::Eol)
        return LineResult::Empty;
    if (t.is_kw("local")) {
        r.type = HbaConnType::Local;
    } else if (t.is_kw("host")) {
        r.type = HbaConnType::Host;
    } else if (t.is_kw("hostssl")) {
        r.type = HbaConnType::HostSsl;
    } else if (t.is_kw("hostnossl")) {
        r.type = HbaConnType::HostNoSsl;
    } else {
        err = "unknown connection type \"" + t.text() + "\"";
        return LineResult::Bad;
    }
    t.next();
    if (!parse_names(t, r.db, true, source, err) || !parse_names(t, r.user, false, source, err))
        return LineResult::Bad;
    if (r.type != HbaConnType::Local && !parse_address(t, r, source, lineno, err))
        return LineResult::Bad;
    if (t.type() != Tok::Ident) {
        err = "missing authentication method";
        return LineResult::Bad;
    }
    if (!parse_method(t.text(), r.method)) {
        err = "unsupported authentication method \"" + t.text() + "\"";
        return LineResult::Bad;
    }
    if (r.method == AuthMethod::Ldap) {
        std::string_view opts = t.rest();
        while (!opts.empty() && is_blank(opts.front()))
            opts.remove_prefix(1);
        while (!opts.empty() && is_blank(opts.back()))
            opts.remove_suffix(1);
        r.ldap_options.assign(opts);
        r.line = lineno;
        return LineResult::Rule;
    }
    t.next();
    if (t.type() == Tok::Ident) {
        if (t.text().compare(0, 4, "map=") != 0) {
            err = "unsupported option \"" + t.text() + "\" (only map= is supported)";
            return LineResult::Bad;
        }
        r.map = t.text().substr(4);
        if (!ident.has_map(r.map)) {
            err = "ident map \"" + r.map + "\" is not found in the ident config file";
            return LineResult::Bad;
        }
        t.next();
    }
    if (t.type() != Tok::Eol) {
        err = "unsupported parameters";
        return LineResult::Bad;
    }
    r.line = lineno;
    return LineResult::Rule;
}

bool parse_ident_line(std::string_view line, IdentFile::Mapping& m, bool& empty, std::string& err) {
    Tokenizer t(line);
    empty = t.type() == Tok::Eol;
    if (empty)
        return true;
    if (t.type() != Tok::Ident) {
        err = "expected a map name";
        return false;
    }
    m.map = t.text();
    t.next();
    if (t.type() != Tok::Ident && t.type() != Tok::String) {
        err = "missing system user name";
        return false;
    }
    if (t.type() == Tok::Ident && t.text()[0] == '/') {
        err = "regular expressions are not supported";
        return false;
    }
    m.system_user = t.text();
    t.next();
    if (t.is_kw("all")) {
        m.all_db_users = true;
    } else if (t.type() == Tok::Ident || t.type() == Tok::String) {
        if (t.type() == Tok::Ident && (t.text()[0] == '+' || t.text()[0] == '/')) {
            err = "group names and regular expressions are not supported";
            return false;
        }
        m.db_user = t.text();
    } else {
        err = "missing database user name";
        return false;
    }
    t.next();
    if (t.type() != Tok::Eol) {
        err = "unsupported parameters";
        return false;
    }
    return true;
}

bool names_match(const HbaNames& n, std::string_view name, std::string_view pair) noexcept {
    if (n.all || (n.sameuser && name == pair))
        return true;
    for (const std::string& s : n.names)
        if (s == name)
            return true;
    return false;
}

bool addr_matches(const HbaRule& r, const ConnInfo& ci) noexcept {
    if (ci.family != r.family)
        return false;
    for (size_t i = 0; i < addr_len(r.family); ++i)
        if ((ci.addr[i] & r.mask[i]) != r.addr[i])
            return false;
    return true;
}

}  // namespace

const char* auth_method_name(AuthMethod m) noexcept {
    switch (m) {
    case AuthMethod::Trust:
        return "trust";
    case AuthMethod::Reject:
        return "reject";
    case AuthMethod::Md5:
        return "md5";
    case AuthMethod::Password:
        return "password";
    case AuthMethod::ScramSha256:
        return "scram-sha-256";
    case AuthMethod::Cert:
        return "cert";
    case AuthMethod::Peer:
        return "peer";
    case AuthMethod::Ldap:
        return "ldap";
    case AuthMethod::Pam:
        return "pam";
    }
    return "?";
}

void IdentFile::parse(std::string_view text, std::string_view source) {
    for_each_line(text, [&](std::string_view line, size_t lineno) {
        Mapping m;
        bool empty = false;
        std::string err;
        if (!parse_ident_line(line, m, empty, err)) {
            log_warning("%.*s:%zu: %s", static_cast<int>(source.size()), source.data(), lineno,
                        err.c_str());
            log_warning("could not parse ident config line %zu", lineno);  // PgBouncer's
            return;
        }
        if (!empty)
            mappings_.push_back(std::move(m));
    });
}

bool IdentFile::load(const std::string& path, std::string& err) {
    mappings_.clear();
    std::string text;
    if (!read_file(path, text, err))
        return false;
    parse(text, path);
    return true;
}

bool IdentFile::has_map(std::string_view map) const noexcept {
    for (const Mapping& m : mappings_)
        if (m.map == map)
            return true;
    return false;
}

bool IdentFile::allows(std::string_view map, std::string_view system_user,
                       std::string_view db_user) const noexcept {
    if (map.empty())
        return system_user == db_user;
    for (const Mapping& m : mappings_)
        if (m.map == map && m.system_user == system_user &&
            (m.all_db_users || m.db_user == db_user))
            return true;
    return false;
}

void HbaFile::parse(std::string_view text, const std::string& source, const IdentFile& ident) {
    for_each_line(text, [&](std::string_view line, size_t lineno) {
        HbaRule r;
        std::string err;
        switch (parse_hba_line(line, lineno, source, ident, r, err)) {
        case LineResult::Empty:
            return;
        case LineResult::Rule:
            rules_.push_back(std::move(r));
            return;
        case LineResult::Bad:
            // The reason with file and line, then the line PgBouncer writes (what log
            // collectors match).
            log_warning("%s:%zu: %s", source.c_str(), lineno, err.c_str());
            log_warning("could not parse hba config line %zu", lineno);
            return;
        }
    });
}

bool HbaFile::load(const std::string& path, const IdentFile& ident, std::string& err) {
    rules_.clear();
    std::string text;
    if (!read_file(path, text, err))
        return false;
    parse(text, path, ident);
    return true;
}

const HbaRule* HbaFile::match(const ConnInfo& ci, std::string_view db,
                              std::string_view user) const noexcept {
    for (const HbaRule& r : rules_) {
        if (ci.unix_socket) {
            if (r.type != HbaConnType::Local)
                continue;
        } else {
            if (r.type == HbaConnType::Local)
                continue;
            if (r.type == HbaConnType::HostSsl && !ci.tls)
                continue;
            if (r.type == HbaConnType::HostNoSsl && ci.tls)
                continue;
            if (!r.addr_all && !addr_matches(r, ci))
                continue;
        }
        // A physical replication connection matches only `replication`, and `replication`
        // matches nothing else (PostgreSQL's rule; `all` does not cover replication).
        if (ci.replication ? !r.db.replication : !names_match(r.db, db, user))
            continue;
        if (!names_match(r.user, user, db))
            continue;
        return &r;
    }
    return nullptr;
}

void load_hba_files(const std::string& hba_path, const std::string& ident_path, HbaFile& hba,
                    IdentFile& ident) {
    std::string err;
    ident.clear();
    if (!ident_path.empty() && !ident.load(ident_path, err))
        log_error("could not open ident config file %s: %s", ident_path.c_str(), err.c_str());
    hba.clear();
    if (hba_path.empty()) {
        log_warning("auth_type=hba but auth_hba_file is not set: every login is rejected");
        return;
    }
    if (!hba.load(hba_path, ident, err))
        log_error("could not open hba config file %s: %s", hba_path.c_str(), err.c_str());
    else
        log_debug("loaded %zu hba rules from %s", hba.size(), hba_path.c_str());
}

bool os_user_name(uint32_t uid, std::string& out) {
    long n = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t size = n > 0 ? static_cast<size_t>(n) : 16384;
    std::unique_ptr<char[]> buf(new char[size]);
    passwd pw{};
    passwd* res = nullptr;
    if (getpwuid_r(static_cast<uid_t>(uid), &pw, buf.get(), size, &res) != 0 || !res)
        return false;
    out = res->pw_name;
    return true;
}

void conn_info_set_addr(ConnInfo& ci, const sockaddr_storage& ss) noexcept {
    ci.addr.fill(0);
    if (ss.ss_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &ss, sizeof sin);
        std::memcpy(ci.addr.data(), &sin.sin_addr, 4);
        ci.family = AF_INET;
    } else if (ss.ss_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, &ss, sizeof sin6);
        std::memcpy(ci.addr.data(), &sin6.sin6_addr, 16);
        ci.family = AF_INET6;
    } else {
        ci.family = 0;
    }
}

bool conn_info_set_addr(ConnInfo& ci, std::string_view text) {
    std::string s(text);
    std::array<uint8_t, 16> a{};
    if (inet_pton(AF_INET6, s.c_str(), a.data()) == 1) {
        ci.family = AF_INET6;
    } else if (inet_pton(AF_INET, s.c_str(), a.data()) == 1) {
        ci.family = AF_INET;
    } else {
        return false;
    }
    ci.addr = a;
    return true;
}

}  // namespace sluice
