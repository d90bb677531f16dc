// Prepared-statement registry and the per-client / per-server maps.
#include "sluice/ps_cache.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "sluice/proto/packet.h"
#include "sluice/util/hex.h"
#include "sluice/util/quoted.h"

namespace sluice {
namespace {

std::unordered_map<std::string_view, std::unique_ptr<PsEntry>>& registry() {
    static auto* r = new std::unordered_map<std::string_view, std::unique_ptr<PsEntry>>();
    return *r;
}
uint64_t g_next_id = 1;

}  // namespace

void ps_names_start_at(uint64_t first) {
    g_next_id = std::max(g_next_id, first);
}

PsEntry* ps_intern(std::string_view query, std::string_view params) {
    std::string key;
    key.reserve(query.size() + 1 + params.size());
    key.append(query);
    key.push_back('\0');
    key.append(params);
    auto& r = registry();
    auto it = r.find(key);
    if (it != r.end()) {
        it->second->refs++;
        return it->second.get();
    }
    auto e = std::make_unique<PsEntry>();
    e->id = g_next_id++;
    char name[32];
    snprintf(name, sizeof(name), "sluice_%llu", static_cast<unsigned long long>(e->id));
    e->name = name;
    e->key = std::move(key);
    e->query = std::string_view(e->key).substr(0, query.size());
    e->params = std::string_view(e->key).substr(query.size() + 1);
    e->refs = 1;
    PsEntry* out = e.get();
    std::string_view k = out->key;
    r.emplace(k, std::move(e));
    return out;
}

PsEntry* ps_find(std::string_view query, std::string_view params) {
    std::string key;
    key.reserve(query.size() + 1 + params.size());
    key.append(query);
    key.push_back('\0');
    key.append(params);
    auto it = registry().find(key);
    return it == registry().end() ? nullptr : it->second.get();
}

bool peek_statement_named(uint8_t type, std::span<const uint8_t> b, bool& named) noexcept {
    switch (type) {
    case msg::kParse:
        if (b.empty())
            return false;
        named = b[0] != 0;
        return true;
    case msg::kBind:
        for (size_t i = 0; i < b.size(); ++i) {
            if (b[i] == 0) {
                if (i + 1 >= b.size())
                    return false;
                named = b[i + 1] != 0;
                return true;
            }
        }
        return false;
    case msg::kDescribe:
    case msg::kClose:
        if (b.size() < 2)
            return false;
        named = b[0] == 'S' && b[1] != 0;
        return true;
    default:
        named = false;
        return true;
    }
}

void ps_ref(PsEntry* e) noexcept {
    e->refs++;
}

void ps_unref(PsEntry* e) noexcept {
    if (--e->refs == 0)
        registry().erase(std::string_view(e->key));
}

size_t ps_registry_size() noexcept {
    return registry().size();
}

ClientPs::~ClientPs() {
    clear();
    forget_done(true);
    release_closed();
}

PsEntry* ClientPs::find(std::string_view name) const {
    if (!body_)
        return nullptr;
    if (const Map::value_type* last = body_->last; last && last->first == name)
        return last->second.e;
    auto it = body_->map.find(name);
    if (it == body_->map.end())
        return nullptr;
    body_->last = &*it;
    return it->second.e;
}

void ClientPs::add(std::string_view name, PsEntry* e) {
    ps_ref(e);
    Body& b = body();
    if (++b.serial == 0)
        b.serial = 1;
    b.map.emplace(std::string(name), Named{e, b.serial});
}

void ClientPs::remove(std::string_view name) {
    if (!body_)
        return;
    auto it = body_->map.find(name);
    if (it == body_->map.end())
        return;
    PsEntry* e = it->second.e;
    body_->last = nullptr;
    body_->map.erase(it);
    ps_unref(e);
    drop_body_if_empty();
}

void ClientPs::remove_entry(PsEntry* e) {
    if (!body_)
        return;
    for (auto it = body_->map.begin(); it != body_->map.end(); ++it) {
        if (it->second.e == e) {
            body_->last = nullptr;
            body_->map.erase(it);
            ps_unref(e);
            drop_body_if_empty();
            return;
        }
    }
}

void ClientPs::clear() {
    if (!body_)
        return;
    for (auto& [name, n] : body_->map)
        ps_unref(n.e);
    body_->last = nullptr;
    body_->map.clear();
    drop_body_if_empty();
}

void ClientPs::forget_all() {
    if (!body_)
        return;
    forget_done(true);  // an earlier one still unanswered: taken to have run
    for (auto& [name, n] : body_->map)
        body_->forgotten.emplace_back(name, n.e);  // the map's references move along
    body_->last = nullptr;
    body_->map.clear();
    drop_body_if_empty();
}

void ClientPs::forget_done(bool ran) {
    if (!body_ || body_->forgotten.empty())
        return;
    auto forgotten = std::move(body_->forgotten);
    body_->forgotten.clear();
    for (auto& [name, e] : forgotten) {
        if (!ran && !find(name))
            add(name, e);
        ps_unref(e);
    }
    drop_body_if_empty();
}

std::string_view ClientPs::name_of(const PsEntry* e, uint16_t serial) const noexcept {
    if (!body_)
        return {};
    std::string_view any;
    for (const auto& [name, n] : body_->map) {
        if (n.e != e)
            continue;
        if (n.serial == serial)
            return name;
        if (any.empty())
            any = name;
    }
    // Closed by a request behind the one that failed (which the server then discards).
    for (const Closed& c : body_->closed) {
        if (c.e != e)
            continue;
        if (c.serial == serial)
            return c.name;
        if (any.empty())
            any = c.name;
    }
    return any;
}

void ClientPs::drop_body_if_empty() noexcept {
    // The sync count only orders the entries of `unconfirmed`: with none left it may restart.
    if (body_->map.empty() && body_->unconfirmed.empty() && body_->closed.empty() &&
        body_->forgotten.empty())
        body_.reset();
}

void ClientPs::close_name(std::string_view name) {
    PsEntry* e = find(name);
    uint16_t serial = e ? found() : uint16_t{0};
    if (e)
        ps_ref(e);
    body().closed.push_back(Closed{std::string(name), e, serial});
    remove(name);
}

void ClientPs::pop_closed() noexcept {
    if (!body_ || body_->closed.empty())
        return;
    if (PsEntry* e = body_->closed.front().e)
        ps_unref(e);
    body_->closed.erase(body_->closed.begin());
    drop_body_if_empty();
}

void ClientPs::release_closed() noexcept {
    if (!body_)
        return;
    for (Closed& c : body_->closed)
        if (c.e)
            ps_unref(c.e);
    body_->closed.clear();
}

ServerPs::Copy ServerPs::touch(PsEntry* e) {
    auto it = set_.find(e);
    if (it == set_.end())
        return Copy::None;
    it->second.tick = ++tick_;
    return of(*e, it->second);
}

ServerPs::Copy ServerPs::copy(PsEntry* e) const {
    auto it = set_.find(e);
    return it == set_.end() ? Copy::None : of(*e, it->second);
}

PsEntry* ServerPs::add(PsEntry* e, size_t max) {
    if (auto it = set_.find(e); it != set_.end()) {
        it->second = Use{++tick_, e->generation};
        return nullptr;
    }
    PsEntry* victim = nullptr;
    if (max > 0 && set_.size() >= max) {
        uint64_t oldest = UINT64_MAX;
        for (auto& [entry, use] : set_) {
            if (use.tick < oldest) {
                oldest = use.tick;
                victim = entry;
            }
        }
        if (victim)
            set_.erase(victim);  // its reference goes to the caller
    }
    ps_ref(e);
    set_.emplace(e, Use{++tick_, e->generation});
    return victim;
}

void ServerPs::remove(PsEntry* e) {
    if (set_.erase(e))
        ps_unref(e);
}

void ServerPs::remove_current(PsEntry* e) {
    if (auto it = set_.find(e); it != set_.end() && it->second.generation != kUnknown) {
        set_.erase(it);
        ps_unref(e);
    }
}

void ServerPs::mark_unknown(PsEntry* e) {
    auto [it, added] = set_.try_emplace(e, Use{++tick_, kUnknown});
    if (added)
        ps_ref(e);
    else
        it->second.generation = kUnknown;
}

void ServerPs::mark_all_unknown() {
    for (auto& [e, use] : set_)
        use.generation = kUnknown;
}

void ServerPs::clear() {
    for (auto& [e, use] : set_)
        ps_unref(e);
    set_.clear();
}

namespace {
bool sql_blank(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool ident_start(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           static_cast<unsigned char>(c) >= 0x80;
}
bool ident_char(char c) noexcept {
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}
char ascii_lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}
// One identifier at the start of `t` (skipping blanks), consumed; false if none. `quoted` says
// which kind it was.
bool take_ident(std::string_view& t, std::string& out, bool& quoted) {
    while (!t.empty() && sql_blank(t.front()))
        t.remove_prefix(1);
    out.clear();
    quoted = !t.empty() && t.front() == '"';
    if (quoted) {
        size_t end = 0;
        if (!read_quoted(t, end, out))
            return false;
        t.remove_prefix(end);
        return !out.empty();  // PostgreSQL refuses a zero-length delimited identifier
    }
    if (t.empty() || !ident_start(t.front()))
        return false;
    size_t i = 0;
    while (i < t.size() && ident_char(t[i]))
        out.push_back(ascii_lower(t[i++]));
    t.remove_prefix(i);
    return true;
}
}  // namespace

Forget read_forget(std::string_view text, std::string& name) {
    while (!text.empty() && text.back() == '\0')
        text.remove_suffix(1);
    std::string word;
    bool quoted = false;
    if (!take_ident(text, word, quoted) || quoted || (word != "deallocate" && word != "discard"))
        return Forget::None;
    bool discard = word == "discard";
    if (!take_ident(text, name, quoted))
        return Forget::None;
    if (!discard && !quoted && name == "prepare") {
        std::string_view rest = text;
        std::string next;
        bool next_quoted = false;
        if (take_ident(rest, next, next_quoted)) {  // DEALLOCATE PREPARE name
            name = std::move(next);
            quoted = next_quoted;
            text = rest;
        }
    }
    // Blanks and ';' may follow (empty statements after it change nothing).
    while (!text.empty() && (sql_blank(text.front()) || text.front() == ';'))
        text.remove_prefix(1);
    if (!text.empty())
        return Forget::None;
    if (!quoted && name == "all")
        return discard ? Forget::DiscardAll : Forget::DeallocateAll;
    return discard ? Forget::None : Forget::One;  // DISCARD PLANS / SEQUENCES / TEMP: none
}

namespace {
// Blanks and comments (-- to the end of the line, /* */ nested) at the start of `t`.
void skip_blanks_and_comments(std::string_view& t) noexcept {
    for (;;) {
        while (!t.empty() && sql_blank(t.front()))
            t.remove_prefix(1);
        if (t.starts_with("--")) {
            size_t nl = t.find('\n');
            t.remove_prefix(nl == std::string_view::npos ? t.size() : nl + 1);
        } else if (t.starts_with("/*")) {
            size_t depth = 1, i = 2;
            while (i < t.size() && depth > 0) {
                if (t.substr(i, 2) == "/*") {
                    ++depth;
                    i += 2;
                } else if (t.substr(i, 2) == "*/") {
                    --depth;
                    i += 2;
                } else {
                    ++i;
                }
            }
            t.remove_prefix(i);
        } else {
            return;
        }
    }
}

bool take_keyword(std::string_view& t, std::string& word) {
    bool quoted = false;
    skip_blanks_and_comments(t);
    return take_ident(t, word, quoted) && !quoted;
}
}  // namespace

bool is_transaction_exit(std::string_view text) {
    std::string word;
    if (!take_keyword(text, word))
        return false;
    if (word == "end" || word == "abort")
        return true;
    if (word == "commit" || word == "rollback") {  // but not COMMIT / ROLLBACK PREPARED
        std::string next;
        return !take_keyword(text, next) || next != "prepared";
    }
    return word == "prepare" && take_keyword(text, word) && word == "transaction";
}

bool parse_parse_msg(std::span<const uint8_t> body, ParseMsg& out) noexcept {
    PacketReader r(body);
    uint16_t n;
    if (!r.read_cstr(out.name) || !r.read_cstr(out.query))
        return false;
    std::span<const uint8_t> rest = r.rest();
    if (!r.read_u16(n) || r.remaining() != size_t{n} * 4)
        return false;
    out.params = std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size());
    return true;
}

bool parse_bind_msg(std::span<const uint8_t> body, BindMsg& out) noexcept {
    PacketReader r(body);
    if (!r.read_cstr(out.portal) || !r.read_cstr(out.statement))
        return false;
    out.rest = r.rest();
    return true;
}

void write_parse(std::string& out, std::string_view name, std::string_view query,
                 std::string_view params) {
    PacketWriter w(out);
    w.begin(msg::kParse);
    w.put_cstr(name);
    w.put_cstr(query);
    w.put_bytes(params);
    w.finish();
}

void write_state_probe(std::string& out) {
    static constexpr char no_types[2] = {0, 0};
    write_parse(out, "sluice_state_probe", "SELECT sluice_checks_the_transaction_state",
                std::string_view(no_types, 2));
}

void write_bind(std::string& out, std::string_view portal, std::string_view statement,
                std::span<const uint8_t> rest) {
    // Every Bind of a cached statement is rewritten: sized once, copied in pieces.
    size_t len = 4 + portal.size() + 1 + statement.size() + 1 + rest.size();
    size_t at = out.size();
    out.resize(at + 1 + len);
    auto* p = reinterpret_cast<uint8_t*>(out.data() + at);
    *p++ = msg::kBind;
    write_be32(p, static_cast<uint32_t>(len));
    p += 4;
    for (std::string_view s : {portal, statement}) {
        memcpy(p, s.data(), s.size());
        p += s.size();
        *p++ = 0;
    }
    if (!rest.empty())
        memcpy(p, rest.data(), rest.size());
}

void write_describe_or_close(std::string& out, uint8_t type, uint8_t what, std::string_view name) {
    PacketWriter w(out);
    w.begin(type);
    w.put_u8(what);
    w.put_cstr(name);
    w.finish();
}

std::string ps_export(const ClientPs& ps) {
    std::string out;
    ps.for_each([&](std::string_view name, const PsEntry& e) {
        append_hex(out, name);
        out += ':';
        append_hex(out, e.query);
        out += ':';
        append_hex(out, e.params);
        out += ';';
    });
    return out;
}

bool ps_import(std::string_view text, ClientPs& ps) {
    std::string name, query, params;
    while (!text.empty()) {
        size_t end = text.find(';');
        if (end == std::string_view::npos)
            return false;
        std::string_view item = text.substr(0, end);
        text.remove_prefix(end + 1);
        size_t a = item.find(':');
        size_t b = a == std::string_view::npos ? a : item.find(':', a + 1);
        if (b == std::string_view::npos || !decode_hex(item.substr(0, a), name) ||
            !decode_hex(item.substr(a + 1, b - a - 1), query) ||
            !decode_hex(item.substr(b + 1), params) || name.empty() || ps.find(name))
            return false;
        PsEntry* e = ps_intern(query, params);
        ps.add(name, e);
        ps_unref(e);  // add() took its own
    }
    return true;
}

}  // namespace sluice
