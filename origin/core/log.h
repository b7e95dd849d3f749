/* log: the process-wide log sink: one line per event on stderr, with a level.
 *
 * Thread-safe (each line is one write(2)). The level is the only global
 * state; any thread may change it (SIGHUP does) while others log. The
 * access log is core/accesslog. */
#ifndef SAYIN_LOG_H
#define SAYIN_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Sets the lowest level that is printed; default LOG_INFO. */
void log_set_level(enum log_level level);
/* Parses "error", "warn", "info" or "debug"; returns 0 or SAYIN_ECONFIG. */
int log_parse_level(const char *name, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
