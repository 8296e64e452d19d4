/*-------------------------------------------------------------------------
 * http_routes.h
 *	  Plain HTTP on the ws port: /healthz, /metrics, static files.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_HTTP_ROUTES_H
#define PRESENCE_HTTP_ROUTES_H

struct lws;

extern int	http_serve(struct lws *wsi, const char *uri);

#endif							/* PRESENCE_HTTP_ROUTES_H */
