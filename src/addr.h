/* addr.h - socket addresses as people read them. */
#ifndef ECHOCHATD_ADDR_H
#define ECHOCHATD_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest "[v6-address%scope]:port" plus NUL. */
#define ADDR_STRLEN 80

const char *addr_format(const struct sockaddr *sa, char *buf, size_t len);
unsigned addr_port(const struct sockaddr *sa);

/* An IP address without its port; an IPv4-mapped IPv6 address counts as IPv4. */
struct addr_ip {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t bytes[16];
};

/* An address with a prefix length: "192.0.2.0/24", "2001:db8::/32", or one address. */
struct addr_prefix {
	struct addr_ip ip;
	unsigned bits;
};

/* A list of prefixes, as [server] allow and deny hold them. */
struct addr_acl {
	struct addr_prefix *prefixes;
	size_t count;
};

bool addr_ip_from_sockaddr(const struct sockaddr *sa, struct addr_ip *ip);
bool addr_prefix_parse(const char *text, struct addr_prefix *prefix);
bool addr_prefix_match(const struct addr_prefix *prefix, const struct addr_ip *ip);
int addr_acl_parse(const char *list, struct addr_acl *acl, char *why, size_t whylen);
bool addr_acl_match(const struct addr_acl *acl, const struct addr_ip *ip);
void addr_acl_free(struct addr_acl *acl);

/* Open connections per address: a small hash table. */
struct addr_counter;

struct addr_counter *addr_counter_new(void);
unsigned addr_counter_get(const struct addr_counter *counter, const struct addr_ip *ip);
unsigned addr_counter_add(struct addr_counter *counter, const struct addr_ip *ip, int delta);
size_t addr_counter_size(const struct addr_counter *counter);
void addr_counter_free(struct addr_counter *counter);

#endif
