// Values of the [databases], [users] and [peers] sections: "key=value key='quoted value' ...",
// tokenized like PgBouncer's cstr_get_pair() in src/loader.c, then typed per key.
#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/config/config.h"
#include "sluice/util/quoted.h"

#include "values.h"

namespace sluice {

namespace {

bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

void skip_space(std::string_view& s) noexcept {
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
}

enum class Pair : uint8_t {
    Ok,
    End,
    Bad,
};

// Takes the next key=value from `rest`. Quoted values run to the next lone quote, '' standing
// for one quote; unquoted values end at a blank. Empty keys and empty values are syntax
// errors, as in PgBouncer.
Pair next_pair(std::string_view& rest, std::string& key, std::string& value) {
    skip_space(rest);
    if (rest.empty())
        return Pair::End;
    size_t k = 0;
    while (k < rest.size() && rest[k] != '=' && !is_space(rest[k]))
        k++;
    if (k == 0)
        return Pair::Bad;
    key.assign(rest.substr(0, k));
    rest.remove_prefix(k);
    skip_space(rest);
    if (rest.empty() || rest.front() != '=')
        return Pair::Bad;
    rest.remove_prefix(1);
    skip_space(rest);

    value.clear();
    if (!rest.empty() && rest.front() == '\'') {
        size_t end = 0;
        if (!read_quoted(rest, end, value, '\''))
            return Pair::Bad;  // unterminated quote
        rest.remove_prefix(end);
        if (!rest.empty() && !is_space(rest.front()))
            return Pair::Bad;  // junk glued to the closing quote
    } else {
        size_t v = 0;
        while (v < rest.size() && !is_space(rest[v]))
            v++;
        value.assign(rest.substr(0, v));
        rest.remove_prefix(v);
    }
    return value.empty() ? Pair::Bad : Pair::Ok;
}

// Integer connection-string value in [lo, hi]; err names the key.
bool get_int(const std::string& key, const std::string& value, int64_t lo, int64_t hi, int& out,
             std::string& err) {
    int64_t v = 0;
    if (!cfgval::parse_int_in_range(value, cfgval::parse_int_dec, lo, hi, v, err)) {
        err = key + ": " + err;
        return false;
    }
    out = static_cast<int>(v);
    return true;
}

bool get_pool_mode(const std::string& value, std::optional<PoolMode>& out, std::string& err) {
    PoolMode m{};
    if (!parse_pool_mode(value, m)) {
        err = "invalid pool mode: " + value;
        return false;
    }
    out = m;
    return true;
}

constexpr int64_t kIntMax = INT32_MAX;

// Walks the key=value pairs of an entry, calling fn(key, value) for each; stops at the first
// pair fn refuses (it sets err) or at bad syntax (err = bad_syntax).
template <typename Fn>
bool for_each_pair(std::string_view value, const char* bad_syntax, std::string& err, Fn&& fn) {
    std::string key, val;
    std::string_view rest = value;
    for (;;) {
        Pair p = next_pair(rest, key, val);
        if (p == Pair::End)
            return true;
        if (p == Pair::Bad) {
            err = bad_syntax;
            return false;
        }
        if (!fn(key, val))
            return false;
    }
}

}  // namespace

bool parse_database_entry(std::string_view value, DatabaseEntry& out, std::string& err) {
    DatabaseEntry e;
    e.name = out.name;
    bool parsed = for_each_pair(value, "syntax error in connection string", err, [&](const std::string& key,
                                                        const std::string& val) {
        bool ok = true;
        if (key == "dbname") {
            e.dbname = val;
        } else if (key == "host") {
            e.host = val;
        } else if (key == "port") {
            ok = get_int(key, val, 1, 65535, e.port, err);
        } else if (key == "user") {
            e.user = val;
        } else if (key == "password") {
            e.password = val;
        } else if (key == "auth_user") {
            e.auth_user = val;
        } else if (key == "auth_query") {
            e.auth_query = val;
        } else if (key == "auth_dbname") {
            e.auth_dbname = val;
        } else if (key == "pool_size") {
            ok = get_int(key, val, 0, kIntMax, e.pool_size, err);
        } else if (key == "min_pool_size") {
            ok = get_int(key, val, 0, kIntMax, e.min_pool_size, err);
        } else if (key == "reserve_pool_size" || key == "reserve_pool") {
            ok = get_int(key, val, 0, kIntMax, e.reserve_pool_size, err);
        } else if (key == "max_db_connections") {
            ok = get_int(key, val, 0, kIntMax, e.max_db_connections, err);
        } else if (key == "max_db_client_connections") {
            ok = get_int(key, val, 0, kIntMax, e.max_db_client_connections, err);
        } else if (key == "server_lifetime") {
            ok = get_int(key, val, 0, kIntMax, e.server_lifetime, err);
            if (ok && e.server_lifetime == 0)
                e.server_lifetime = -1;  // PgBouncer: 0 means "use the global value"
        } else if (key == "pool_mode") {
            ok = get_pool_mode(val, e.pool_mode, err);
        } else if (key == "connect_query") {
            e.connect_query = val;
        } else if (key == "load_balance_hosts") {
            if (cfgval::iequals(val, "round-robin") || cfgval::iequals(val, "disable")) {
                e.load_balance_hosts = cfgval::iequals(val, "disable") ? "disable" : "round-robin";
            } else {
                err = "invalid load_balance_hosts: " + val;
                ok = false;
            }
        } else if (key == "client_encoding") {
            e.client_encoding = val;
        } else if (key == "datestyle") {
            e.datestyle = val;
        } else if (key == "timezone") {
            e.timezone = val;
        } else if (key == "application_name") {
            e.application_name = val;
        } else if (key == "query_wait_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.query_wait_timeout, err);
        } else {
            err = "unrecognized connection parameter: " + key;
            ok = false;
        }
        return ok;
    });
    if (!parsed)
        return false;
    out = std::move(e);
    return true;
}

bool parse_user_entry(std::string_view value, UserEntry& out, std::string& err) {
    UserEntry e;
    e.name = out.name;
    bool parsed = for_each_pair(value, "syntax error in user settings", err, [&](const std::string& key,
                                                        const std::string& val) {
        bool ok = true;
        if (key == "pool_mode") {
            ok = get_pool_mode(val, e.pool_mode, err);
        } else if (key == "pool_size") {
            ok = get_int(key, val, 0, kIntMax, e.pool_size, err);
        } else if (key == "reserve_pool_size" || key == "reserve_pool") {
            ok = get_int(key, val, 0, kIntMax, e.reserve_pool_size, err);
        } else if (key == "max_user_connections") {
            ok = get_int(key, val, 0, kIntMax, e.max_user_connections, err);
        } else if (key == "max_user_client_connections") {
            ok = get_int(key, val, 0, kIntMax, e.max_user_client_connections, err);
        } else if (key == "query_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.query_timeout, err);
        } else if (key == "idle_transaction_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.idle_transaction_timeout, err);
        } else if (key == "transaction_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.transaction_timeout, err);
        } else if (key == "client_idle_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.client_idle_timeout, err);
        } else if (key == "query_wait_timeout") {
            ok = get_int(key, val, 0, kIntMax, e.query_wait_timeout, err);
        } else {
            err = "unrecognized user parameter: " + key;
            ok = false;
        }
        return ok;
    });
    if (!parsed)
        return false;
    out = std::move(e);
    return true;
}

bool parse_peer_entry(std::string_view value, PeerEntry& out, std::string& err) {
    PeerEntry e;
    e.peer_id = out.peer_id;
    bool parsed = for_each_pair(value, "syntax error in connection string", err, [&](const std::string& key,
                                                        const std::string& val) {
        bool ok = true;
        if (key == "host") {
            e.host = val;
        } else if (key == "port") {
            ok = get_int(key, val, 1, 65535, e.port, err);
        } else if (key == "pool_size") {
            ok = get_int(key, val, 0, kIntMax, e.pool_size, err);
        } else {
            err = "unrecognized connection parameter: " + key;
            ok = false;
        }
        return ok;
    });
    if (!parsed)
        return false;
    if (e.host.empty()) {
        err = "host was not provided for peer " + std::to_string(e.peer_id);
        return false;
    }
    out = std::move(e);
    return true;
}

std::vector<std::string> split_list(std::string_view list) {
    std::vector<std::string> items;
    while (!list.empty()) {
        size_t comma = list.find(',');
        std::string_view item = list.substr(0, comma);
        while (!item.empty() && is_space(item.front()))
            item.remove_prefix(1);
        while (!item.empty() && is_space(item.back()))
            item.remove_suffix(1);
        if (!item.empty())
            items.emplace_back(item);
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
    return items;
}

}  // namespace sluice
