"""The two uwsgi.ini files of the seed deployment (shared/seeds/003), verbatim: tests parse and serve them."""

# Verbatim from the seed article, section "配置uwsgi.ini启动文件" (the plain file) ...
SEED_PLAIN = """\
[uwsgi]
socket = 0.0.0.0:3031
chdir = /code/mmcsite
wsgi-file = /code/mmcsite/wsgi.py
processes = 5
threads = 30
master = true
daemonize = /code/mmcsite/uwsgi.log
module=mmcsite.wsgi
pidfile = /code/mmcsite/uwsgi.pid
chmod-socket=666
enable-threads = true
"""

# ... and the same settings annotated with inline Chinese comments (trailing space on chdir kept).
SEED_ANNOTATED = """\
[uwsgi]
socket = 0.0.0.0:3031                  # 指定socket监听的地址和端口
chdir = /code/mmcsite                  # 项目路径 
wsgi-file = /code/mmcsite/wsgi.py      # django的wsgi文件路径
processes = 5                          # 启动五个进程
threads = 30                           # 每个进程启动30个线程
master = true
daemonize = /code/mmcsite/uwsgi.log    # 日志存放路径
module=mmcsite.wsgi                    # 使用mmcsite.wsgi模块
pidfile = /code/mmcsite/uwsgi.pid      # uwsgi启动进程id存放路径
chmod-socket=666                       # socket权限
enable-threads = true                  # 允许用内嵌的语言启动线程，这将允许你在app程序中产生一个子线程
"""
