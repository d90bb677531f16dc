// Admin console: access control, welcome and command dispatch for the "pgbouncer" database.
#include "sluice/admin/admin.h"

#include <strings.h>

#include "sluice/pool/pool.h"

namespace sluice {
namespace {

bool in_list(const std::string& list, const std::string& name) {
    for (const std::string& x : split_list(list))
        if (x == name)
            return true;
    return false;
}

bool check_access(Client& c) {
    if (c.user_name == "pgbouncer" && c.peer_is_self) {
        c.admin_full = true;
        return true;
    }
    if (in_list(settings().admin_users, c.user_name)) {
        c.admin_full = true;
        return true;
    }
    if (in_list(settings().stats_users, c.user_name)) {
        c.admin_full = false;
        return true;
    }
    return settings().auth_type == AuthType::Any;
}

void send_welcome(Client& c) {
    std::string& out = c.sb.out_for_append();
    write_auth(out, kAuthOk);
    write_parameter_status(out, "server_version", "1.26.1/bouncer");
    write_parameter_status(out, "client_encoding", "UTF8");
    write_parameter_status(out, "server_encoding", "UTF8");
    write_parameter_status(out, "DateStyle", "ISO");
    write_parameter_status(out, "TimeZone", "GMT");
    write_parameter_status(out, "standard_conforming_strings", "on");
    write_parameter_status(out, "is_superuser", "on");
    write_backend_key(out, c.cancel_pid, c.cancel_key);
    write_ready(out, 'I');
    static_cast<void>(c.sb.flush_out());
}

void handle_query(Client& c, std::string_view sql) {
    std::string& out = c.sb.out_for_append();
    std::string q(sql);
    while (!q.empty() && (q.back() == ';' || q.back() == ' ' || q.back() == '\n'))
        q.pop_back();
    if (strcasecmp(q.c_str(), "show version") == 0) {
        PacketWriter w(out);
        w.begin(msg::kRowDescription);
        w.put_u16(1);
        w.put_cstr("version");
        w.put_u32(0);
        w.put_u16(0);
        w.put_u32(25);
        w.put_u16(static_cast<uint16_t>(-1));
        w.put_i32(-1);
        w.put_u16(0);
        w.finish();
        w.begin(msg::kDataRow);
        w.put_u16(1);
        std::string v = std::string("sluice ") + SLUICE_VERSION;
        w.put_u32(static_cast<uint32_t>(v.size()));
        w.put_bytes(v);
        w.finish();
        w.begin(msg::kCommandComplete);
        w.put_cstr("SHOW");
        w.finish();
    } else {
        write_error(out, "ERROR", "08P01", "invalid command '" + std::string(sql) + "', use SHOW HELP;");
    }
    write_ready(out, 'I');
    static_cast<void>(c.sb.flush_out());
}

}  // namespace

void admin_init() {
    g_admin_hooks.check_access = check_access;
    g_admin_hooks.send_welcome = send_welcome;
    g_admin_hooks.handle_query = handle_query;
}

}  // namespace sluice
