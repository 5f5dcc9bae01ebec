/* addr.c - socket addresses as people read them. */
#include "addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Format "192.0.2.1:7" or "[2001:db8::1]:7" into buf and return buf. */
const char *
addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
		break;
	}
	default:
		snprintf(buf, len, "(family %d)", sa->sa_family);
		break;
	}
	return buf;
}

/* Return the port of an IPv4 or IPv6 address, else 0. */
unsigned
addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	return 0;
}

/* Take the address of sa, without its port; IPv4-mapped IPv6 becomes IPv4. */
bool
addr_ip_from_sockaddr(const struct sockaddr *sa, struct addr_ip *ip)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(ip, 0, sizeof(*ip));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
		ip->family = AF_INET;
		memcpy(ip->bytes, &sin->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (memcmp(&sin6->sin6_addr, v4mapped, sizeof(v4mapped)) == 0) {
			ip->family = AF_INET;
			memcpy(ip->bytes, (const uint8_t *)&sin6->sin6_addr + 12, 4);
		} else {
			ip->family = AF_INET6;
			memcpy(ip->bytes, &sin6->sin6_addr, 16);
		}
		return true;
	}
	return false;
}

/* Parse "ADDR" or "ADDR/BITS" (IPv4 or IPv6); host bits past the prefix are ignored. */
bool
addr_prefix_parse(const char *text, struct addr_prefix *prefix)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
	unsigned max;

	memset(prefix, 0, sizeof(*prefix));
	if (len == 0 || len >= sizeof(host))
		return false;
	memcpy(host, text, len);
	host[len] = '\0';
	if (inet_pton(AF_INET, host, prefix->ip.bytes) == 1) {
		prefix->ip.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, prefix->ip.bytes) == 1) {
		prefix->ip.family = AF_INET6;
		max = 128;
	} else
		return false;
	prefix->bits = max;
	if (slash != NULL) {
		const char *p = slash + 1;
		unsigned bits = 0;
		if (*p == '\0' || strlen(p) > 3)
			return false;
		for (; *p != '\0'; p++) {
			if (!isdigit((unsigned char)*p))
				return false;
			bits = bits * 10 + (unsigned)(*p - '0');
		}
		if (bits > max)
			return false;
		prefix->bits = bits;
	}
	return true;
}

/* Tell whether ip lies within prefix. */
bool
addr_prefix_match(const struct addr_prefix *prefix, const struct addr_ip *ip)
{
	unsigned full = prefix->bits / 8, rest = prefix->bits % 8;

	if (prefix->ip.family != ip->family)
		return false;
	if (memcmp(prefix->ip.bytes, ip->bytes, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((prefix->ip.bytes[full] ^ ip->bytes[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* Parse a comma-separated list of prefixes ("" is an empty list); -1 and why on error. */
int
addr_acl_parse(const char *list, struct addr_acl *acl, char *why, size_t whylen)
{
	const char *p = list;

	acl->prefixes = NULL;
	acl->count = 0;
	while (*p != '\0') {
		const char *start, *end, *comma;
		char item[INET6_ADDRSTRLEN + 8];
		struct addr_prefix *grown;

		while (*p == ' ' || *p == '\t')
			p++;
		comma = strchr(p, ',');
		start = p;
		end = comma != NULL ? comma : p + strlen(p);
		p = comma != NULL ? comma + 1 : end;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end == start && comma == NULL && acl->count == 0)
			break; /* only blanks */
		if ((size_t)(end - start) >= sizeof(item)) {
			snprintf(why, whylen, "\"%.*s...\" is not an address or prefix", 40, start);
			addr_acl_free(acl);
			return -1;
		}
		memcpy(item, start, (size_t)(end - start));
		item[end - start] = '\0';
		grown = realloc(acl->prefixes, (acl->count + 1) * sizeof(*grown));
		if (grown == NULL) {
			snprintf(why, whylen, "out of memory");
			addr_acl_free(acl);
			return -1;
		}
		acl->prefixes = grown;
		if (!addr_prefix_parse(item, &acl->prefixes[acl->count])) {
			snprintf(why, whylen, "\"%s\" is not an address or prefix (e.g. 192.0.2.0/24, 2001:db8::/32)",
			         item);
			addr_acl_free(acl);
			return -1;
		}
		acl->count++;
	}
	return 0;
}

/* Tell whether ip lies within any prefix of the list. */
bool
addr_acl_match(const struct addr_acl *acl, const struct addr_ip *ip)
{
	for (size_t i = 0; i < acl->count; i++)
		if (addr_prefix_match(&acl->prefixes[i], ip))
			return true;
	return false;
}

void
addr_acl_free(struct addr_acl *acl)
{
	free(acl->prefixes);
	acl->prefixes = NULL;
	acl->count = 0;
}

struct addr_count_entry {
	struct addr_count_entry *next;
	struct addr_ip ip;
	unsigned count;
};

#define ADDR_COUNTER_BUCKETS 4096

struct addr_counter {
	struct addr_count_entry *buckets[ADDR_COUNTER_BUCKETS];
	size_t size; /* addresses with at least one connection */
};

struct addr_counter *
addr_counter_new(void)
{
	return calloc(1, sizeof(struct addr_counter));
}

/* FNV-1a over the address bytes. */
static size_t
addr_hash(const struct addr_ip *ip)
{
	uint32_t h = 2166136261u ^ ip->family;
	size_t n = ip->family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < n; i++) {
		h ^= ip->bytes[i];
		h *= 16777619u;
	}
	return h % ADDR_COUNTER_BUCKETS;
}

/* Find the slot pointing at ip's entry (or at the NULL that ends its chain). */
static struct addr_count_entry **
addr_counter_slot(struct addr_counter *counter, const struct addr_ip *ip)
{
	struct addr_count_entry **slot = &counter->buckets[addr_hash(ip)];

	while (*slot != NULL && ((*slot)->ip.family != ip->family ||
	                         memcmp((*slot)->ip.bytes, ip->bytes, sizeof(ip->bytes)) != 0))
		slot = &(*slot)->next;
	return slot;
}

unsigned
addr_counter_get(const struct addr_counter *counter, const struct addr_ip *ip)
{
	struct addr_count_entry *const *slot =
		addr_counter_slot((struct addr_counter *)(uintptr_t)counter, ip);

	return *slot != NULL ? (*slot)->count : 0;
}

/* Change ip's count by delta (entries at zero are freed); returns the new count. */
unsigned
addr_counter_add(struct addr_counter *counter, const struct addr_ip *ip, int delta)
{
	struct addr_count_entry **slot = addr_counter_slot(counter, ip), *entry = *slot;

	if (entry == NULL) {
		if (delta <= 0)
			return 0;
		entry = calloc(1, sizeof(*entry));
		if (entry == NULL)
			return 0;
		entry->ip = *ip;
		*slot = entry;
		counter->size++;
	}
	if (delta < 0 && (unsigned)-delta >= entry->count) {
		*slot = entry->next;
		free(entry);
		counter->size--;
		return 0;
	}
	entry->count = (unsigned)((int)entry->count + delta);
	return entry->count;
}

size_t
addr_counter_size(const struct addr_counter *counter)
{
	return counter->size;
}

void
addr_counter_free(struct addr_counter *counter)
{
	if (counter == NULL)
		return;
	for (size_t i = 0; i < ADDR_COUNTER_BUCKETS; i++) {
		struct addr_count_entry *e = counter->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(counter);
}
