/* daemon.c - classic daemon mode, the pidfile, and dropping root privileges. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

/* The write end of the pipe to the waiting parent, while the daemon starts. */
static int report_fd = -1;

/*
 * Go to the background: fork, setsid, fork again. The original process waits on a pipe
 * until the daemon reports (daemon_report) that it is ready or why it failed, and exits
 * with that status, so init scripts see start-up failures. Returns 0 in the daemon.
 */
int
daemon_detach(void)
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) == -1)
		return -1;
	pid = fork();
	if (pid == -1)
		return -1;
	if (pid > 0) {
		unsigned char status;
		ssize_t n;

		close(fds[1]);
		do
			n = read(fds[0], &status, 1);
		while (n == -1 && errno == EINTR);
		/* The intermediate child exits at once; reap it. */
		waitpid(pid, NULL, 0);
		if (n != 1) {
			fprintf(stderr, "echochatd: the daemon exited during start-up\n");
			_exit(1);
		}
		_exit(status);
	}
	close(fds[0]);
	if (setsid() == -1)
		_exit(1);
	pid = fork();
	if (pid == -1)
		_exit(1);
	if (pid > 0)
		_exit(0); /* the session leader leaves: the daemon can never get a terminal */
	report_fd = fds[1];
	if (chdir("/") == -1)
		return -1;
	umask(027);
	return 0;
}

/* Tell the waiting parent how start-up went (0: ready); then let go of the terminal. */
void
daemon_report(int status)
{
	unsigned char byte = (unsigned char)status;
	int null;

	if (report_fd == -1)
		return;
	if (write(report_fd, &byte, 1) != 1) {
		/* the parent is gone: nobody to tell */
	}
	close(report_fd);
	report_fd = -1;
	if (status != 0)
		return;
	null = open("/dev/null", O_RDWR);
	if (null != -1) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
}

/* Read the pid a pidfile names; 0 if none. */
static pid_t
pidfile_read(const char *path)
{
	char buf[32];
	ssize_t n;
	long pid;
	char *end;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, &end, 10);
	if (pid <= 0 || (*end != '\n' && *end != '\0'))
		return 0;
	return (pid_t)pid;
}

/* Tell whether pid is a running echochatd (not just any process that reused the pid). */
static bool
pid_is_echochatd(pid_t pid)
{
	char path[64], comm[64];
	FILE *fp;
	bool match = false;

	if (kill(pid, 0) == -1 && errno == ESRCH)
		return false;
	/* A zombie (dead, not yet reaped) is not running either. */
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	fp = fopen(path, "re");
	if (fp != NULL) {
		char stat[256], *paren;
		bool zombie = fgets(stat, sizeof(stat), fp) != NULL &&
		              (paren = strrchr(stat, ')')) != NULL && paren[1] == ' ' && paren[2] == 'Z';
		fclose(fp);
		if (zombie)
			return false;
	}
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	fp = fopen(path, "re");
	if (fp == NULL)
		return true; /* alive, and we cannot tell: be safe */
	if (fgets(comm, sizeof(comm), fp) != NULL)
		match = strncmp(comm, "echochatd", 9) == 0;
	fclose(fp);
	return match;
}

/* Refuse to start when the pidfile names a live echochatd; a stale one is fine. */
int
pidfile_check(const char *path, char *err, size_t errlen)
{
	pid_t pid = pidfile_read(path);

	if (pid > 0 && pid != getpid() && pid_is_echochatd(pid)) {
		snprintf(err, errlen, "already running: %s names process %ld", path, (long)pid);
		return -1;
	}
	return 0;
}

/* Write our pid atomically: into a temporary file, then renamed over the pidfile. */
int
pidfile_write(const char *path, char *err, size_t errlen)
{
	char tmp[4096], line[32];
	int fd, len;

	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "pidfile path too long");
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd == -1) {
		snprintf(err, errlen, "cannot write pidfile %s: %s", tmp, strerror(errno));
		return -1;
	}
	len = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (write(fd, line, (size_t)len) != len || fsync(fd) == -1 || close(fd) == -1) {
		snprintf(err, errlen, "cannot write pidfile %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "cannot write pidfile %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Remove the pidfile if it still names us. After dropping privileges its directory may
 * not be ours to write: the file is then left, and the next start sees it is stale. */
void
pidfile_remove(const char *path)
{
	if (pidfile_read(path) == getpid() && unlink(path) == -1)
		log_info("cannot remove pidfile %s: %s", path, strerror(errno));
}

/* Become user (and group, or the user's own), with the user's supplementary groups;
 * check that root cannot be regained. */
int
privileges_drop(const char *user, const char *group, char *err, size_t errlen)
{
	struct passwd *pw;
	gid_t gid;

	errno = 0;
	/* The daemon is single-threaded: the non-reentrant lookups are safe here. */
	// cppcheck-suppress getpwnamCalled
	pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(err, errlen, "[server] user: no such user: %s", user);
		return -1;
	}
	gid = pw->pw_gid;
	if (group != NULL && group[0] != '\0') {
		// cppcheck-suppress getgrnamCalled
		struct group *gr = getgrnam(group);
		if (gr == NULL) {
			snprintf(err, errlen, "[server] group: no such group: %s", group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (initgroups(pw->pw_name, gid) == -1 || setgid(gid) == -1 || setuid(pw->pw_uid) == -1) {
		snprintf(err, errlen, "cannot become %s: %s", user, strerror(errno));
		return -1;
	}
	if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgid() != gid ||
	    getegid() != gid || (pw->pw_uid != 0 && setuid(0) != -1)) {
		snprintf(err, errlen, "dropping privileges to %s did not take", user);
		return -1;
	}
	return 0;
}
