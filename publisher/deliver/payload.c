/* payload: the delivery jobs' messages, written and read (see payload.h). */
#include "deliver/payload.h"

static const char *const list_names[PAYLOAD_LIST_COUNT] = { "paths", "keys", "objects",
	                                                     "removed" };

json_t *payload_cdn_new(const char *event, const char *author, const char *post,
                        json_t *const lists[PAYLOAD_LIST_COUNT])
{
	return json_pack("{s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "event", event, "author", author,
	                 "post", post ? post : "", list_names[PAYLOAD_PATHS], lists[PAYLOAD_PATHS],
	                 list_names[PAYLOAD_KEYS], lists[PAYLOAD_KEYS], list_names[PAYLOAD_OBJECTS],
	                 lists[PAYLOAD_OBJECTS], list_names[PAYLOAD_REMOVED],
	                 lists[PAYLOAD_REMOVED]);
}

json_t *payload_object_new(const char *path, const char *sha256, const char *type)
{
	return json_pack("{s:s, s:s, s:s}", "path", path, "sha256", sha256, "type", type);
}

json_t *payload_crosspost_new(const char *post, const char *author, const char *text,
                              const char *url)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "crosspost", "post", post, "author",
	                 author, "text", text ? text : "", "url", url);
}

void payload_read(const json_t *payload, payload_view *v)
{
	v->event = json_string_value(json_object_get(payload, "event"));
	v->author = json_string_value(json_object_get(payload, "author"));
	v->post = json_string_value(json_object_get(payload, "post"));
	v->text = json_string_value(json_object_get(payload, "text"));
	v->url = json_string_value(json_object_get(payload, "url"));
}

const json_t *payload_list(const json_t *payload, enum payload_list which)
{
	return json_object_get(payload, list_names[which]);
}

const char *payload_object_path(const json_t *object)
{
	return json_string_value(json_object_get(object, "path"));
}

const char *payload_object_sha256(const json_t *object)
{
	return json_string_value(json_object_get(object, "sha256"));
}
