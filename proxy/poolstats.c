/*
 * Counting a pool's clients and server connections for SHOW POOLS and the
 * metrics, so both say the same.  Walks the proxy's lists; changes nothing.
 */
#include "proxy/poolstats.h"
#include "proxy/pool.h"

#include <string.h>

void
poolstats_count(const Proxy *proxy, const Pool *pool, PoolStats *stats)
{
	const List *item;
	double now = ev_now(proxy->loop);

	memset(stats, 0, sizeof(*stats));
	list_for_each(item, &proxy->active_clients)
	{
		const Client *c = container_of(item, const Client, head);

		if (c->pool != pool)
			continue;
		if (c->pool_waiting) {
			stats->cl_waiting++;
			if (now - c->wait_since > stats->maxwait)
				stats->maxwait = now - c->wait_since;
		} else {
			stats->cl_active++;
		}
	}
	list_for_each(item, &proxy->idle_servers)
	{
		const Server *s = container_of(item, const Server, head);

		if (s->pool != pool || s->cluster != proxy->serving)
			continue;
		if (s->state == SV_TESTING)
			stats->sv_tested++;
		else if (now - s->idle_since >= proxy->config.proxy.server_check_delay / 1e6)
			stats->sv_used++;
		else
			stats->sv_idle++;
	}
	list_for_each(item, &proxy->active_servers) stats->sv_active +=
		container_of(item, const Server, head)->pool == pool;
	list_for_each(item, &proxy->login_servers)
	{
		const Server *s = container_of(item, const Server, head);

		stats->sv_login += s->pool == pool && s->cluster == proxy->serving && !s->is_standby;
	}
	stats->mode = database_pool_mode(proxy, pool->db);
}

const char *
poolstats_mode_name(PoolMode mode)
{
	return mode == POOL_TRANSACTION ? "transaction" : "session";
}
