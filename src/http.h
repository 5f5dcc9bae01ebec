/* http.h - the metrics endpoint: /metrics, /healthz, /clients over libevent's evhttp. */
#ifndef ECHOCHATD_HTTP_H
#define ECHOCHATD_HTTP_H

struct server;

int http_apply(struct server *s);
void http_stop(struct server *s);

#endif
