// Labels of the console in English and Korean (the seed's users read Korean).
const LABELS = {
  en: {
    title: 'System Management', product: 'PLURA Fleet', signIn: 'Sign in', signOut: 'Sign out',
    tokenLabel: 'API token', tokenHint: 'plura-server token create --role admin|operator|monitor',
    badToken: 'That token was not accepted.', role: 'Role',
    withToken: 'API token', withPassword: 'User / password', username: 'User', password: 'Password',
    monitor: 'monitor', operator: 'operator', admin: 'admin',
    registered: 'Registered', onOff: 'ON / OFF', running: 'Running', stopped: 'Stopped',
    unknown: 'Unknown', perKind: 'Per kind', perOs: 'Per OS',
    no: 'NO', on: 'ON', off: 'OFF', status: 'Status', version: 'Version', group: 'Group',
    ip: 'Host IP', hostname: 'Hostname', os: 'OS', kind: 'Kind', registeredAt: 'Registered',
    lastSeen: 'Last seen', lastLogin: 'Last login', machineId: 'Machine ID', sourceIp: 'Source IP',
    any: 'All', search: 'Search IP, hostname, group, OS…', perPage: 'per page', csv: 'CSV',
    assignGroup: 'Assign group', groupPrompt: 'Group for the selected agents (empty: none)',
    delete: 'Delete', confirmDelete: 'Delete {n} agent(s)? Their history goes too.',
    register: 'Register', registerTitle: 'Register a system',
    cancel: 'Cancel', save: 'Save', total: '{n} agents', page: 'Page {p} of {n}',
    prev: 'Previous', next: 'Next', details: 'Details', history: 'History', close: 'Close',
    noAgents: 'No agents match.', live: 'Live', offline: 'Reconnecting…', none: '(none)',
    event: 'Event', at: 'Time', detail: 'Detail', language: '한국어', takenOver: 'Taken over',
  },
  ko: {
    title: '시스템 관리', product: 'PLURA Fleet', signIn: '로그인', signOut: '로그아웃',
    tokenLabel: 'API 토큰', tokenHint: 'plura-server token create --role admin|operator|monitor',
    badToken: '토큰이 올바르지 않습니다.', role: '권한',
    withToken: 'API 토큰', withPassword: '사용자 / 비밀번호', username: '사용자', password: '비밀번호',
    monitor: '모니터', operator: '운영자', admin: '관리자',
    registered: '등록', onOff: 'ON / OFF', running: '실행 중', stopped: '중지',
    unknown: '알 수 없음', perKind: '종류별', perOs: 'OS별',
    no: 'NO', on: 'ON', off: 'OFF', status: '상태', version: '버전', group: '그룹',
    ip: '호스트 IP', hostname: '호스트명', os: 'OS', kind: '종류', registeredAt: '등록일',
    lastSeen: '마지막 응답', lastLogin: '마지막 로그인', machineId: '머신 ID', sourceIp: '접속 IP',
    any: '전체', search: 'IP, 호스트명, 그룹, OS 검색…', perPage: '개씩', csv: 'CSV',
    assignGroup: '그룹 지정', groupPrompt: '선택한 에이전트의 그룹 (비우면 없음)',
    delete: '삭제', confirmDelete: '에이전트 {n}개를 삭제할까요? 이력도 함께 삭제됩니다.',
    register: '등록', registerTitle: '시스템 등록',
    cancel: '취소', save: '저장', total: '에이전트 {n}개', page: '{p} / {n} 페이지',
    prev: '이전', next: '다음', details: '상세', history: '이력', close: '닫기',
    noAgents: '일치하는 에이전트가 없습니다.', live: '실시간', offline: '다시 연결 중…', none: '(없음)',
    event: '이벤트', at: '시각', detail: '내용', language: 'English', takenOver: '인계됨',
  },
};

let current = (localStorage.getItem('plura.lang') ||
  (navigator.language || 'en').slice(0, 2)) === 'ko' ? 'ko' : 'en';

export function lang() {
  return current;
}

export function toggleLang() {
  current = current === 'ko' ? 'en' : 'ko';
  localStorage.setItem('plura.lang', current);
  document.documentElement.lang = current;
}

/** The label `key` in the current language, with `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = LABELS[current][key] ?? LABELS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}
