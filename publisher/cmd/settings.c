/* cmd settings: prints every setting as a README-ready Markdown table, or
 * (--example) as an INI file with every key commented out. */
#include "cmd/cmd.h"

static const config_arg settings_args[] = {
	{ "example", NULL, "print an INI file with every setting commented out instead", 1 },
};

static const cmd_spec settings_spec = {
	.name = "settings",
	.usage = "Usage: sayin-publisher settings [--example] [--config FILE]\n\n"
	         "Prints every setting of both programs as a Markdown table (the one in\n"
	         "publisher/README.md); --example prints them as an INI file instead, each\n"
	         "commented out with its default (installed as sayin.ini.example). A --config\n"
	         "FILE is read first, so an unknown key or a syntax error in it is reported.\n\n",
	.args = settings_args,
	.nargs = sizeof(settings_args) / sizeof(settings_args[0]),
};

int cmd_settings(int argc, char **argv)
{
	config *cfg = NULL;
	int code = cmd_load_config(&settings_spec, argc, argv, &cfg);

	if (code >= 0)
		return code;
	if (config_get(cfg, "example") != NULL)
		config_print_example(stdout);
	else
		config_print_reference(stdout);
	config_free(cfg);
	return EXIT_OK;
}
