/* replay: a main for the fuzz targets without libFuzzer, so the normal
 * compiler (gcc, with ASan + UBSan) runs each target on its checked-in
 * corpus in `make fuzz-replay`. Takes files and folders (every regular file
 * inside, not recursing); calls LLVMFuzzerInitialize first when the target
 * defines it. A sanitizer report aborts the program; an unreadable path
 * exits 1. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *data;
	long len;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		if (f != NULL)
			fclose(f);
		return 1;
	}
	/* An exact-size copy, so ASan sees a read past the input's end. */
	data = malloc(len > 0 ? (size_t)len : 1);
	if (data == NULL || fread(data, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		free(data);
		fclose(f);
		return 1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(data, (size_t)len);
	free(data);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir, in name order (a stable replay). */
static int run_dir(const char *dir, int *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (d == NULL) {
		fprintf(stderr, "replay: cannot open %s\n", dir);
		return 1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **bigger = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
			if (bigger == NULL) {
				rc = 1;
				break;
			}
			names = bigger;
		}
		size_t len = strlen(dir) + strlen(e->d_name) + 2;
		names[n] = malloc(len);
		if (names[n] == NULL) {
			rc = 1;
			break;
		}
		snprintf(names[n], len, "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat sb;
		if (rc == 0 && stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
			rc = run_file(names[i]);
			(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	int count = 0;

	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat sb;
		int rc;
		if (stat(argv[i], &sb) != 0) {
			fprintf(stderr, "replay: cannot open %s\n", argv[i]);
			return 1;
		}
		rc = S_ISDIR(sb.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i]);
		if (rc == 0 && !S_ISDIR(sb.st_mode))
			count++;
		if (rc != 0)
			return 1;
	}
	printf("replay %s: %d inputs, no sanitizer report\n", argv[0], count);
	return 0;
}
