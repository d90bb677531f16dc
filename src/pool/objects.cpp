// State changes of clients and servers: the list that holds an object is its state.
#include <arpa/inet.h>
#include <sys/un.h>

#include "sluice/pool/pool.h"

namespace sluice {
namespace {

List<Client, &Client::node>* client_list(Client& c, ClientState st) {
    switch (st) {
    case ClientState::Login:
        return &rt().login_clients;
    case ClientState::Waiting:
        return c.pool ? &c.pool->waiting : nullptr;
    case ClientState::Active:
        return c.pool ? &c.pool->active : nullptr;
    case ClientState::Closing:
        return &rt().free_clients;
    }
    return nullptr;
}

List<Server, &Server::node>& server_list(Server& s, ServerState st) {
    switch (st) {
    case ServerState::Login:
        return s.pool->login;
    case ServerState::Idle:
        return s.pool->idle;
    case ServerState::Active:
        return s.pool->active_servers;
    case ServerState::Used:
        return s.pool->used;
    case ServerState::Closing:
        break;
    }
    return rt().free_servers;
}

}  // namespace

AdminHooks g_admin_hooks;

void set_state(Client& c, ClientState next) {
    if (c.node.linked()) {
        auto* old = client_list(c, c.state);
        if (old)
            old->remove(c);
        else
            c.node.unlink();
    }
    c.state = next;
    auto* l = client_list(c, next);
    if (l)
        l->push_back(c);
    if (next == ClientState::Closing)
        schedule_free();
}

void set_state(Server& s, ServerState next) {
    if (s.node.linked())
        server_list(s, s.state).remove(s);
    s.state = next;
    auto& l = server_list(s, next);
    if (next == ServerState::Idle && !settings().server_round_robin)
        l.push_front(s);  // LIFO reuse keeps the hot connections hot
    else
        l.push_back(s);  // round robin: take from the front, add at the back
    if (next == ServerState::Closing)
        schedule_free();
}

void link(Client& c, Server& s) {
    c.server = &s;
    s.client = &c;
    SBuf::link(c.sb, s.sb);
}

void unlink(Client& c, Server& s) {
    c.server = nullptr;
    s.client = nullptr;
    c.sb.unlink();
}

TcpOptions tcp_options_from(const Settings& s) {
    return TcpOptions{.keepalive = s.tcp_keepalive,
                      .keepcnt = s.tcp_keepcnt,
                      .keepidle = s.tcp_keepidle,
                      .keepintvl = s.tcp_keepintvl,
                      .user_timeout_ms = s.tcp_user_timeout,
                      .socket_buffer = s.tcp_socket_buffer};
}

}  // namespace sluice
