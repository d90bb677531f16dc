// Host lists of [databases] entries (net/sockets.h): counting and picking hosts.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "sluice/net/sockets.h"

namespace {

void test_single_host(void**) {
    assert_int_equal(sluice::host_count("db1"), 1);
    assert_string_equal(sluice::host_at("db1", 0).c_str(), "db1");
    assert_string_equal(sluice::host_at("db1", 7).c_str(), "db1");
    // "" is the unix socket in unix_socket_dir, a list of one empty host.
    assert_int_equal(sluice::host_count(""), 1);
    assert_string_equal(sluice::host_at("", 3).c_str(), "");
}

void test_list_rotates(void**) {
    const char* list = "10.0.0.1, db2 ,/var/run/postgresql";
    assert_int_equal(sluice::host_count(list), 3);
    auto all = sluice::hosts_of(list);
    assert_int_equal(all.size(), 3);
    assert_string_equal(all[1].c_str(), "db2");
    assert_string_equal(all[2].c_str(), "/var/run/postgresql");
    const char* want[] = {"10.0.0.1", "db2", "/var/run/postgresql"};
    for (size_t i = 0; i < 9; ++i)
        assert_string_equal(sluice::host_at(list, i).c_str(), want[i % 3]);
}

void test_empty_elements(void**) {
    // An empty element means the default unix socket, as a lone empty host does.
    assert_int_equal(sluice::host_count("a,,b"), 3);
    assert_string_equal(sluice::host_at("a,,b", 1).c_str(), "");
    assert_string_equal(sluice::host_at("a,,b", 2).c_str(), "b");
    assert_int_equal(sluice::host_count("a,"), 2);
    assert_string_equal(sluice::host_at("a,", 1).c_str(), "");
}

void test_unix_targets(void**) {
    sluice::PeerAddr a;
    std::string err;
    // "" is the default directory; "/dir" a directory; "@name" the abstract namespace.
    assert_true(sluice::unix_target("", 6000, "/run/pg", a, err));
    const auto* un = reinterpret_cast<const sockaddr_un*>(&a.ss);
    assert_int_equal(un->sun_family, AF_UNIX);
    assert_string_equal(un->sun_path, "/run/pg/.s.PGSQL.6000");
    assert_int_equal(a.len, offsetof(sockaddr_un, sun_path) + strlen("/run/pg/.s.PGSQL.6000") + 1);

    assert_true(sluice::unix_target("/tmp/x", 5432, "/run/pg", a, err));
    assert_string_equal(un->sun_path, "/tmp/x/.s.PGSQL.5432");

    assert_true(sluice::unix_target("@pgabs", 5432, "/run/pg", a, err));
    const std::string name = "pgabs/.s.PGSQL.5432";
    assert_int_equal(un->sun_path[0], '\0');
    assert_memory_equal(un->sun_path + 1, name.data(), name.size());
    assert_int_equal(a.len, offsetof(sockaddr_un, sun_path) + 1 + name.size());

    assert_false(sluice::unix_target("/" + std::string(200, 'd'), 5432, "", a, err));
    assert_true(err.find("too long") != std::string::npos);
}

void test_unix_or_name(void**) {
    assert_true(sluice::is_unix_target(""));
    assert_true(sluice::is_unix_target("/run/pg"));
    assert_true(sluice::is_unix_target("@pgabs"));
    assert_false(sluice::is_unix_target("127.0.0.1"));
    assert_false(sluice::is_unix_target("::1"));
    assert_false(sluice::is_unix_target("db.example.com"));
}

sluice::PeerAddr ip(const char* host, uint16_t port) {
    sluice::PeerAddr a;
    if (strchr(host, ':')) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, host, &in6->sin6_addr), 1);
        a.len = sizeof(sockaddr_in6);
    } else {
        auto* in = reinterpret_cast<sockaddr_in*>(&a.ss);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, host, &in->sin_addr), 1);
        a.len = sizeof(sockaddr_in);
    }
    return a;
}

// DNS failover matching (net/dns.h): a server's address against a name's former address.
void test_same_ip(void**) {
    assert_true(sluice::same_ip(ip("10.0.0.1", 5432), ip("10.0.0.1", 0)));
    assert_false(sluice::same_ip(ip("10.0.0.1", 5432), ip("10.0.0.2", 5432)));
    assert_true(sluice::same_ip(ip("::1", 6432), ip("::1", 0)));
    assert_false(sluice::same_ip(ip("::1", 0), ip("::2", 0)));
    // ::ffff:10.0.0.1 is another family: no match (an answer gives A and AAAA apart).
    assert_false(sluice::same_ip(ip("::ffff:10.0.0.1", 0), ip("10.0.0.1", 0)));
    sluice::PeerAddr u;
    std::string err;
    assert_true(sluice::unix_target("/tmp", 5432, "", u, err));
    assert_false(sluice::same_ip(u, u));  // unix sockets have no address to match
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_single_host),
        cmocka_unit_test(test_list_rotates),
        cmocka_unit_test(test_empty_elements),
        cmocka_unit_test(test_unix_targets),
        cmocka_unit_test(test_unix_or_name),
        cmocka_unit_test(test_same_ip),
    };
    return cmocka_run_group_tests_name("sockets", tests, nullptr, nullptr);
}
