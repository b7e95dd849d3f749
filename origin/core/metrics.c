/* metrics: Prometheus series in per-thread shards, rendered as text format 0.0.4. */
#include "core/metrics.h"

#include "core/buf.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define NO_SERIES ((size_t)-1)

enum series_kind { KIND_COUNTER, KIND_HISTOGRAM, KIND_GAUGE_FN, KIND_COUNTER_FN };
enum family_type { FAMILY_COUNTER, FAMILY_GAUGE, FAMILY_HISTOGRAM };

struct series {
	enum series_kind kind;
	size_t family;
	size_t next;     /* next series of the same family, or NO_SERIES */
	char *labels;    /* "" when none */
	size_t slot;     /* first value slot in every shard (counter, histogram) */
	double *bounds;  /* histogram upper bounds, ascending; +Inf implicit */
	size_t n_bounds;
	metrics_gauge_cb fn;
	void *arg;
};

struct family {
	char *name;
	char *help;
	enum family_type type;
	size_t first, last;
};

/* A counter takes one slot. A histogram takes n_bounds + 1 bucket counts
 * (not cumulative: an observation touches one) and then its sum, stored as
 * the bits of a double. Only the owner thread writes a shard, so a relaxed
 * load and store replace a locked read-modify-write. */
struct metrics_shard {
	struct metrics_shard *next;
	const metrics *m;
	_Atomic uint64_t *values;
};

struct metrics {
	struct series *series;
	size_t n_series, cap_series;
	struct family *families;
	size_t n_families, cap_families;
	size_t n_slots;
	int frozen; /* a shard exists: no more definitions */
	/* Pushed with release, walked with acquire: a render may run on another
	 * thread than the one creating shards. */
	_Atomic(struct metrics_shard *) shards;
};

int metrics_create(metrics **out)
{
	metrics *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return -ENOMEM;
	atomic_init(&m->shards, NULL);
	*out = m;
	return 0;
}

void metrics_destroy(metrics *m)
{
	struct metrics_shard *s, *next;

	if (m == NULL)
		return;
	for (s = atomic_load(&m->shards); s != NULL; s = next) {
		next = s->next;
		free(s->values);
		free(s);
	}
	for (size_t i = 0; i < m->n_series; i++) {
		free(m->series[i].labels);
		free(m->series[i].bounds);
	}
	for (size_t i = 0; i < m->n_families; i++) {
		free(m->families[i].name);
		free(m->families[i].help);
	}
	free(m->series);
	free(m->families);
	free(m);
}

/* ---- definitions ---- */

static int is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_name_char(char c)
{
	return is_name_start(c) || (c >= '0' && c <= '9');
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static int valid_metric_name(const char *name)
{
	if (name == NULL || !(is_name_start(name[0]) || name[0] == ':'))
		return 0;
	for (const char *p = name + 1; *p != '\0'; p++) {
		if (!is_name_char(*p) && *p != ':')
			return 0;
	}
	return 1;
}

/* A label list without braces: name="value" pairs separated by commas,
 * values escaped as the format requires (\\, \", \n). A histogram's own le
 * label must not appear in it. */
static int valid_labels(const char *labels, int forbid_le)
{
	const char *p = labels;

	if (*p == '\0')
		return 1;
	for (;;) {
		const char *name = p;
		if (!is_name_start(*p))
			return 0;
		while (is_name_char(*p))
			p++;
		if (forbid_le && p - name == 2 && strncmp(name, "le", 2) == 0)
			return 0;
		if (p[0] != '=' || p[1] != '"')
			return 0;
		p += 2;
		while (*p != '"') {
			if (*p == '\0' || *p == '\n')
				return 0;
			if (*p == '\\') {
				if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
					return 0;
				p++;
			}
			p++;
		}
		p++;
		if (*p == '\0')
			return 1;
		if (*p != ',')
			return 0;
		p++;
	}
}

/* Room for one more element in an array doubled as it fills; returns the
 * (possibly moved) array, or NULL with the old one intact. */
static void *grow(void *array, size_t *cap, size_t used, size_t elem)
{
	size_t n;
	void *p;

	if (used < *cap)
		return array;
	n = *cap == 0 ? 16 : *cap * 2;
	p = realloc(array, n * elem);
	if (p != NULL)
		*cap = n;
	return p;
}

static size_t find_family(const metrics *m, const char *name)
{
	for (size_t i = 0; i < m->n_families; i++) {
		if (strcmp(m->families[i].name, name) == 0)
			return i;
	}
	return NO_SERIES;
}

static enum family_type family_type_of(enum series_kind kind)
{
	switch (kind) {
	case KIND_COUNTER:
	case KIND_COUNTER_FN:
		return FAMILY_COUNTER;
	case KIND_HISTOGRAM:
		return FAMILY_HISTOGRAM;
	case KIND_GAUGE_FN:
		break;
	}
	return FAMILY_GAUGE;
}

/* Adds a series (and its family if new). Takes ownership of bounds, also
 * on failure. Definitions are O(series) each: a registry holds tens. */
static metrics_id define(metrics *m, enum series_kind kind, const char *name, const char *help,
                         const char *labels, double *bounds, size_t n_bounds, size_t n_slots)
{
	enum family_type type = family_type_of(kind);
	struct series *se;
	void *grown;
	size_t fam;
	int rc = -EINVAL;

	if (labels == NULL)
		labels = "";
	if (m == NULL || m->frozen || !valid_metric_name(name) ||
	    !valid_labels(labels, kind == KIND_HISTOGRAM))
		goto fail;
	if (m->n_series >= (size_t)INT32_MAX)
		goto fail;
	fam = find_family(m, name);
	if (fam != NO_SERIES) {
		if (m->families[fam].type != type)
			goto fail;
		for (size_t i = m->families[fam].first; i != NO_SERIES; i = m->series[i].next) {
			if (strcmp(m->series[i].labels, labels) == 0)
				goto fail; /* the same sample twice would be invalid */
		}
	}
	rc = -ENOMEM;
	grown = grow(m->series, &m->cap_series, m->n_series, sizeof(*m->series));
	if (grown == NULL)
		goto fail;
	m->series = grown;
	if (fam == NO_SERIES) {
		struct family *f;
		grown = grow(m->families, &m->cap_families, m->n_families, sizeof(*m->families));
		if (grown == NULL)
			goto fail;
		m->families = grown;
		f = &m->families[m->n_families];
		memset(f, 0, sizeof(*f));
		f->name = strdup(name);
		f->help = strdup(help != NULL ? help : "");
		if (f->name == NULL || f->help == NULL) {
			free(f->name);
			free(f->help);
			goto fail;
		}
		f->type = type;
		f->first = NO_SERIES;
		f->last = NO_SERIES;
		fam = m->n_families++;
	}
	se = &m->series[m->n_series];
	memset(se, 0, sizeof(*se));
	se->labels = strdup(labels);
	if (se->labels == NULL)
		goto fail; /* a new family stays, empty: it renders nothing */
	se->kind = kind;
	se->family = fam;
	se->next = NO_SERIES;
	se->slot = m->n_slots;
	se->bounds = bounds;
	se->n_bounds = n_bounds;
	m->n_slots += n_slots;
	if (m->families[fam].last == NO_SERIES)
		m->families[fam].first = m->n_series;
	else
		m->series[m->families[fam].last].next = m->n_series;
	m->families[fam].last = m->n_series;
	return (metrics_id)m->n_series++;
fail:
	free(bounds);
	return rc;
}

metrics_id metrics_counter(metrics *m, const char *name, const char *help, const char *labels)
{
	return define(m, KIND_COUNTER, name, help, labels, NULL, 0, 1);
}

metrics_id metrics_histogram(metrics *m, const char *name, const char *help, const char *labels,
                             const double *bounds, size_t n_bounds)
{
	double *copy = NULL;

	if (n_bounds > 0) {
		if (bounds == NULL)
			return -EINVAL;
		for (size_t i = 0; i < n_bounds; i++) {
			if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
				return -EINVAL;
		}
		copy = malloc(n_bounds * sizeof(*copy));
		if (copy == NULL)
			return -ENOMEM;
		memcpy(copy, bounds, n_bounds * sizeof(*copy));
	}
	/* Buckets including +Inf, then the sum. */
	return define(m, KIND_HISTOGRAM, name, help, labels, copy, n_bounds, n_bounds + 2);
}

static metrics_id define_fn(metrics *m, enum series_kind kind, const char *name, const char *help,
                            const char *labels, metrics_gauge_cb fn, void *arg)
{
	metrics_id id;

	if (fn == NULL)
		return -EINVAL;
	id = define(m, kind, name, help, labels, NULL, 0, 0);
	if (id >= 0) {
		m->series[id].fn = fn;
		m->series[id].arg = arg;
	}
	return id;
}

metrics_id metrics_gauge_fn(metrics *m, const char *name, const char *help, const char *labels,
                            metrics_gauge_cb fn, void *arg)
{
	return define_fn(m, KIND_GAUGE_FN, name, help, labels, fn, arg);
}

metrics_id metrics_counter_fn(metrics *m, const char *name, const char *help, const char *labels,
                              metrics_gauge_cb fn, void *arg)
{
	return define_fn(m, KIND_COUNTER_FN, name, help, labels, fn, arg);
}

/* ---- shards: the hot path ---- */

metrics_shard *metrics_shard_new(metrics *m)
{
	struct metrics_shard *s = calloc(1, sizeof(*s));
	/* Whole cache lines, so two shards never share one. */
	size_t bytes = (m->n_slots * sizeof(uint64_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;

	if (s == NULL)
		return NULL;
	if (bytes == 0)
		bytes = CACHE_LINE;
	s->values = aligned_alloc(CACHE_LINE, bytes);
	if (s->values == NULL) {
		free(s);
		return NULL;
	}
	for (size_t i = 0; i < bytes / sizeof(uint64_t); i++)
		atomic_init(&s->values[i], 0);
	s->m = m;
	m->frozen = 1;
	s->next = atomic_load_explicit(&m->shards, memory_order_relaxed);
	atomic_store_explicit(&m->shards, s, memory_order_release);
	return s;
}

/* Single writer: no lock prefix, and a reader never sees a torn value. */
static void slot_add(_Atomic uint64_t *slot, uint64_t n)
{
	atomic_store_explicit(slot, atomic_load_explicit(slot, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static double bits_to_double(uint64_t bits)
{
	double d;

	memcpy(&d, &bits, sizeof(d));
	return d;
}

static uint64_t double_to_bits(double d)
{
	uint64_t bits;

	memcpy(&bits, &d, sizeof(bits));
	return bits;
}

void metrics_add(metrics_shard *s, metrics_id id, uint64_t n)
{
	const struct series *se;

	if (s == NULL || id < 0 || (size_t)id >= s->m->n_series)
		return;
	se = &s->m->series[id];
	if (se->kind == KIND_COUNTER)
		slot_add(&s->values[se->slot], n);
}

/* A NaN observation is dropped: it would poison the sum for good. */
void metrics_observe(metrics_shard *s, metrics_id id, double value)
{
	const struct series *se;
	_Atomic uint64_t *v, *sum;
	size_t i = 0;

	if (s == NULL || id < 0 || (size_t)id >= s->m->n_series || isnan(value))
		return;
	se = &s->m->series[id];
	if (se->kind != KIND_HISTOGRAM)
		return;
	v = &s->values[se->slot];
	while (i < se->n_bounds && value > se->bounds[i])
		i++;
	slot_add(&v[i], 1);
	sum = &v[se->n_bounds + 1];
	atomic_store_explicit(sum,
	                      double_to_bits(bits_to_double(atomic_load_explicit(
	                                         sum, memory_order_relaxed)) + value),
	                      memory_order_relaxed);
}

/* ---- rendering ---- */

/* Shortest text that reads back as the same double, as Prometheus clients
 * print ("0.005", not "0.0050000000000000001"); integers without exponent. */
static void format_double(double d, char *out, size_t size)
{
	if (isnan(d)) {
		snprintf(out, size, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(out, size, d > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (d == floor(d) && fabs(d) < 1e15) {
		snprintf(out, size, "%.0f", d == 0 ? 0.0 : d);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, size, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

/* HELP text escapes backslash and newline. */
static void put_help(buf *b, const char *help)
{
	for (const char *p = help; *p != '\0'; p++) {
		if (*p == '\\')
			buf_append(b, "\\\\", 2);
		else if (*p == '\n')
			buf_append(b, "\\n", 2);
		else
			buf_putc(b, *p);
	}
}

/* name + suffix + {labels[,extra]} + " " + value + "\n" */
static void put_sample(buf *b, const char *name, const char *suffix, const char *labels,
                       const char *extra, const char *value)
{
	buf_puts(b, name);
	buf_puts(b, suffix);
	if (labels[0] != '\0' || extra != NULL) {
		buf_putc(b, '{');
		buf_puts(b, labels);
		if (labels[0] != '\0' && extra != NULL)
			buf_putc(b, ',');
		if (extra != NULL)
			buf_puts(b, extra);
		buf_putc(b, '}');
	}
	buf_putc(b, ' ');
	buf_puts(b, value);
	buf_putc(b, '\n');
}

static uint64_t sum_slot(struct metrics_shard *shards, size_t slot)
{
	uint64_t total = 0;

	for (struct metrics_shard *s = shards; s != NULL; s = s->next)
		total += atomic_load_explicit(&s->values[slot], memory_order_relaxed);
	return total;
}

/* _count is the +Inf bucket, so the two always agree even while writers
 * race with the scrape. */
static void put_histogram(buf *b, const struct family *f, const struct series *se,
                          struct metrics_shard *shards)
{
	char value[32], le[48], num[32];
	uint64_t cumulative = 0;
	double sum = 0;

	for (size_t i = 0; i <= se->n_bounds; i++) {
		cumulative += sum_slot(shards, se->slot + i);
		if (i < se->n_bounds)
			format_double(se->bounds[i], num, sizeof(num));
		else
			snprintf(num, sizeof(num), "+Inf");
		snprintf(le, sizeof(le), "le=\"%s\"", num);
		snprintf(value, sizeof(value), "%" PRIu64, cumulative);
		put_sample(b, f->name, "_bucket", se->labels, le, value);
	}
	for (struct metrics_shard *s = shards; s != NULL; s = s->next)
		sum += bits_to_double(
		        atomic_load_explicit(&s->values[se->slot + se->n_bounds + 1], memory_order_relaxed));
	format_double(sum, value, sizeof(value));
	put_sample(b, f->name, "_sum", se->labels, NULL, value);
	snprintf(value, sizeof(value), "%" PRIu64, cumulative);
	put_sample(b, f->name, "_count", se->labels, NULL, value);
}

static const char *const type_names[] = {
	[FAMILY_COUNTER] = "counter",
	[FAMILY_GAUGE] = "gauge",
	[FAMILY_HISTOGRAM] = "histogram",
};

int metrics_render(metrics *m, char **out, size_t *len)
{
	struct metrics_shard *shards = atomic_load_explicit(&m->shards, memory_order_acquire);
	buf b = BUF_INIT;
	char value[32];

	buf_reserve(&b, 4096); /* a page's usual size: few reallocations per scrape */
	buf_append(&b, "", 0); /* an empty registry still yields "" */
	for (size_t fi = 0; fi < m->n_families; fi++) {
		const struct family *f = &m->families[fi];

		if (f->first == NO_SERIES)
			continue;
		if (f->help[0] != '\0') {
			buf_puts(&b, "# HELP ");
			buf_puts(&b, f->name);
			buf_putc(&b, ' ');
			put_help(&b, f->help);
			buf_putc(&b, '\n');
		}
		buf_puts(&b, "# TYPE ");
		buf_puts(&b, f->name);
		buf_putc(&b, ' ');
		buf_puts(&b, type_names[f->type]);
		buf_putc(&b, '\n');
		for (size_t i = f->first; i != NO_SERIES; i = m->series[i].next) {
			const struct series *se = &m->series[i];
			switch (se->kind) {
			case KIND_COUNTER:
				snprintf(value, sizeof(value), "%" PRIu64, sum_slot(shards, se->slot));
				put_sample(&b, f->name, "", se->labels, NULL, value);
				break;
			case KIND_HISTOGRAM:
				put_histogram(&b, f, se, shards);
				break;
			case KIND_GAUGE_FN:
			case KIND_COUNTER_FN:
				format_double(se->fn(se->arg), value, sizeof(value));
				put_sample(&b, f->name, "", se->labels, NULL, value);
				break;
			}
		}
	}
	if (buf_failed(&b)) {
		buf_free(&b);
		return -ENOMEM;
	}
	*out = b.data; /* NUL-terminated by every append */
	*len = b.len;
	return 0;
}

/* ---- process metrics ---- */

static double process_cpu_seconds(void *arg)
{
	struct rusage ru;

	(void)arg;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return NAN;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* statm's second field: resident pages. */
static double process_resident_bytes(void *arg)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long size, resident;
	long page = sysconf(_SC_PAGESIZE);
	int n;

	(void)arg;
	if (f == NULL)
		return NAN;
	n = fscanf(f, "%lu %lu", &size, &resident);
	fclose(f);
	if (n != 2 || page <= 0)
		return NAN;
	return (double)resident * (double)page;
}

/* O(open fds): one readdir per descriptor, as the Prometheus clients do.
 * The directory's own descriptor is not counted. */
static double process_open_fds(void *arg)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	double n = 0;

	(void)arg;
	if (d == NULL)
		return NAN;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n > 0 ? n - 1 : 0;
}

static double process_max_fds(void *arg)
{
	struct rlimit rl;

	(void)arg;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return NAN;
	return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

static double process_start_seconds(void *arg)
{
	return *(const double *)arg;
}

int metrics_process_define(metrics *m)
{
	/* One process, one start: shared by every registry it defines. */
	static double start;
	struct timespec ts;
	metrics_id id;

	if (start == 0 && clock_gettime(CLOCK_REALTIME, &ts) == 0)
		start = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	id = metrics_counter_fn(m, "process_cpu_seconds_total",
	                        "Total user and system CPU time spent in seconds.", NULL,
	                        process_cpu_seconds, NULL);
	if (id >= 0)
		id = metrics_gauge_fn(m, "process_resident_memory_bytes",
		                      "Resident memory size in bytes.", NULL, process_resident_bytes,
		                      NULL);
	if (id >= 0)
		id = metrics_gauge_fn(m, "process_open_fds", "Number of open file descriptors.", NULL,
		                      process_open_fds, NULL);
	if (id >= 0)
		id = metrics_gauge_fn(m, "process_max_fds",
		                      "Maximum number of open file descriptors (RLIMIT_NOFILE).", NULL,
		                      process_max_fds, NULL);
	if (id >= 0)
		id = metrics_gauge_fn(m, "process_start_time_seconds",
		                      "Start time of the process since the Unix epoch, in seconds.",
		                      NULL, process_start_seconds, &start);
	return id < 0 ? id : 0;
}
